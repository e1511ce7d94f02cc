// Apache Kafka's own record-batch code (kafka-clients), as an oracle for
// src/ledgergate/wire/kafka/records.py. Run with the jars of scripts/install-kafka:
//
//   java -cp "$(scripts/install-kafka | tail -n 1)/*" tests/vectors/kafka/KafkaRecords.java MODE
//
// build: prints one JSON object per line: a case name, the batch bytes Java's
//        MemoryRecordsBuilder wrote (hex) and what Java's reader reads back from them.
//        capture.py stores that output as java_batches.json.
// read:  reads hex buffers (one per line) on stdin; for each prints one JSON line with
//        every batch Java's reader finds (ensureValid() checks size and CRC-32C) and its
//        records, or {"error": ...}. test_records.py feeds it what records.py built.
//
// Record classes live in org.apache.kafka.common.record.internal since Kafka 4.2.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;

import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.record.internal.ControlRecordType;
import org.apache.kafka.common.record.internal.EndTransactionMarker;
import org.apache.kafka.common.record.internal.MemoryRecords;
import org.apache.kafka.common.record.internal.MemoryRecordsBuilder;
import org.apache.kafka.common.record.internal.MutableRecordBatch;
import org.apache.kafka.common.record.internal.Record;
import org.apache.kafka.common.record.internal.RecordBatch;

public class KafkaRecords {
    static final HexFormat HEX = HexFormat.of();
    static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("build")) {
            build();
        } else if (args.length == 1 && args[0].equals("read")) {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
            String line;
            while ((line = in.readLine()) != null) {
                System.out.println(read(HEX.parseHex(line.strip())));
            }
        } else {
            System.err.println("usage: KafkaRecords build|read");
            System.exit(2);
        }
    }

    static Compression codec(String name) {
        return Compression.of(name).build();
    }

    static MemoryRecordsBuilder builder(ByteBuffer buf, String codec, TimestampType tsType, long baseOffset,
                                        long logAppendTime, long producerId, short epoch, int sequence,
                                        boolean transactional, int leaderEpoch) {
        return MemoryRecords.builder(buf, RecordBatch.CURRENT_MAGIC_VALUE, codec(codec), tsType, baseOffset,
                logAppendTime, producerId, epoch, sequence, transactional, leaderEpoch);
    }

    static byte[] bytesOf(ByteBuffer b) {
        ByteBuffer d = b.duplicate();
        byte[] out = new byte[d.remaining()];
        d.get(out);
        return out;
    }

    static void emit(String name, ByteBuffer batch) {
        byte[] raw = bytesOf(batch);
        System.out.println("{\"name\":\"" + name + "\",\"hex\":\"" + HEX.formatHex(raw) + "\",\"java\":" + read(raw) + "}");
    }

    static void build() {
        long t0 = 1_700_000_000_000L;
        Header[] headers = {
            new RecordHeader("trace-id", "abc123".getBytes(StandardCharsets.UTF_8)),
            new RecordHeader("null-value", null),
            new RecordHeader("ключ", new byte[] {0, (byte) 0xff, 0x7f}),
            new RecordHeader("", new byte[0]),
        };
        byte[] big = "The quick brown fox jumps over the lazy dog. ".repeat(2400).getBytes(StandardCharsets.UTF_8);
        for (String c : CODECS) {
            // Keys: null, empty, binary; values: null, empty, binary, text; headers.
            ByteBuffer buf = ByteBuffer.allocate(1 << 20);
            MemoryRecordsBuilder b = builder(buf, c, TimestampType.CREATE_TIME, 1000L, RecordBatch.NO_TIMESTAMP,
                    RecordBatch.NO_PRODUCER_ID, RecordBatch.NO_PRODUCER_EPOCH, RecordBatch.NO_SEQUENCE, false, 7);
            b.appendWithOffset(1000L, t0, null, "value without key".getBytes(StandardCharsets.UTF_8));
            b.appendWithOffset(1001L, t0 + 1, new byte[0], new byte[0]);
            b.appendWithOffset(1002L, t0 - 5, new byte[] {0, 1, 2, (byte) 0x80, (byte) 0xff}, null);
            b.appendWithOffset(1003L, t0 + 86_400_000L, "k".getBytes(StandardCharsets.UTF_8), "v".getBytes(StandardCharsets.UTF_8), headers);
            b.appendWithOffset(1004L, t0, "no headers".getBytes(StandardCharsets.UTF_8), new byte[300], new Header[0]);
            emit("mixed-" + c, b.build().buffer());
            if (!c.equals("none")) {
                // Bigger than a xerial block (32 KiB) and an LZ4 block (64 KiB).
                buf = ByteBuffer.allocate(1 << 20);
                b = builder(buf, c, TimestampType.CREATE_TIME, 0L, RecordBatch.NO_TIMESTAMP,
                        RecordBatch.NO_PRODUCER_ID, RecordBatch.NO_PRODUCER_EPOCH, RecordBatch.NO_SEQUENCE, false, 0);
                for (int i = 0; i < 3; i++) {
                    b.appendWithOffset(i, t0 + i, ("big-" + i).getBytes(StandardCharsets.UTF_8), big);
                }
                emit("big-" + c, b.build().buffer());
            }
        }
        // Idempotent + transactional producer state.
        ByteBuffer buf = ByteBuffer.allocate(1 << 16);
        MemoryRecordsBuilder b = builder(buf, "zstd", TimestampType.CREATE_TIME, 42L, RecordBatch.NO_TIMESTAMP,
                123456789L, (short) 3, 17, true, 5);
        for (int i = 0; i < 4; i++) {
            b.appendWithOffset(42L + i, t0 + i, ("tx-key-" + i).getBytes(StandardCharsets.UTF_8), ("tx-value-" + i).getBytes(StandardCharsets.UTF_8));
        }
        emit("transactional-zstd", b.build().buffer());
        // Idempotent, not transactional, gzip.
        buf = ByteBuffer.allocate(1 << 16);
        b = builder(buf, "gzip", TimestampType.CREATE_TIME, 0L, RecordBatch.NO_TIMESTAMP, 9L, (short) 0, 0, false, 0);
        b.appendWithOffset(0L, t0, "id".getBytes(StandardCharsets.UTF_8), "idempotent".getBytes(StandardCharsets.UTF_8));
        emit("idempotent-gzip", b.build().buffer());
        // Control batches: transaction markers as the broker writes them.
        emit("control-commit", MemoryRecords.withEndTransactionMarker(50L, t0, 5, 123456789L, (short) 3,
                new EndTransactionMarker(ControlRecordType.COMMIT, 11)).buffer());
        emit("control-abort", MemoryRecords.withEndTransactionMarker(51L, t0, 5, 123456789L, (short) 3,
                new EndTransactionMarker(ControlRecordType.ABORT, 11)).buffer());
        // Broker-set timestamps.
        buf = ByteBuffer.allocate(1 << 16);
        b = builder(buf, "lz4", TimestampType.LOG_APPEND_TIME, 300L, t0 + 999L, RecordBatch.NO_PRODUCER_ID,
                RecordBatch.NO_PRODUCER_EPOCH, RecordBatch.NO_SEQUENCE, false, 2);
        b.appendWithOffset(300L, t0, "lat".getBytes(StandardCharsets.UTF_8), "log append time".getBytes(StandardCharsets.UTF_8));
        b.appendWithOffset(301L, t0 + 5, "lat".getBytes(StandardCharsets.UTF_8), "second".getBytes(StandardCharsets.UTF_8));
        emit("log-append-time-lz4", b.build().buffer());
        // A compacted batch: offsets with gaps, last offset delta beyond the count.
        buf = ByteBuffer.allocate(1 << 16);
        b = builder(buf, "snappy", TimestampType.CREATE_TIME, 500L, RecordBatch.NO_TIMESTAMP,
                RecordBatch.NO_PRODUCER_ID, RecordBatch.NO_PRODUCER_EPOCH, RecordBatch.NO_SEQUENCE, false, 0);
        b.appendWithOffset(500L, t0, "a".getBytes(StandardCharsets.UTF_8), "1".getBytes(StandardCharsets.UTF_8));
        b.appendWithOffset(503L, t0 + 3, "b".getBytes(StandardCharsets.UTF_8), "2".getBytes(StandardCharsets.UTF_8));
        b.appendWithOffset(509L, t0 + 9, "c".getBytes(StandardCharsets.UTF_8), null);
        emit("gaps-snappy", b.build().buffer());
    }

    static String read(byte[] raw) {
        StringBuilder out = new StringBuilder("[");
        try {
            MemoryRecords records = MemoryRecords.readableRecords(ByteBuffer.wrap(raw));
            boolean firstBatch = true;
            for (MutableRecordBatch batch : records.batches()) {
                batch.ensureValid();
                if (!firstBatch) out.append(',');
                firstBatch = false;
                out.append("{\"base_offset\":").append(batch.baseOffset())
                   .append(",\"last_offset\":").append(batch.lastOffset())
                   .append(",\"size\":").append(batch.sizeInBytes())
                   .append(",\"partition_leader_epoch\":").append(batch.partitionLeaderEpoch())
                   .append(",\"crc\":").append(batch.checksum())
                   .append(",\"compression\":\"").append(batch.compressionType().name).append('"')
                   .append(",\"timestamp_type\":\"").append(batch.timestampType()).append('"')
                   .append(",\"transactional\":").append(batch.isTransactional())
                   .append(",\"control\":").append(batch.isControlBatch())
                   .append(",\"delete_horizon\":").append(batch.deleteHorizonMs().isPresent())
                   .append(",\"max_timestamp\":").append(batch.maxTimestamp())
                   .append(",\"producer_id\":").append(batch.producerId())
                   .append(",\"producer_epoch\":").append(batch.producerEpoch())
                   .append(",\"base_sequence\":").append(batch.baseSequence())
                   .append(",\"count\":").append(batch.countOrNull())
                   .append(",\"records\":[");
                boolean firstRecord = true;
                for (Record r : batch) {
                    if (!firstRecord) out.append(',');
                    firstRecord = false;
                    out.append("{\"offset\":").append(r.offset())
                       .append(",\"timestamp\":").append(r.timestamp())
                       .append(",\"key\":").append(hex(r.key()))
                       .append(",\"value\":").append(hex(r.value()))
                       .append(",\"headers\":[");
                    Header[] hs = r.headers();
                    for (int i = 0; i < hs.length; i++) {
                        if (i > 0) out.append(',');
                        out.append("[\"").append(HEX.formatHex(hs[i].key().getBytes(StandardCharsets.UTF_8))).append("\",")
                           .append(hs[i].value() == null ? "null" : "\"" + HEX.formatHex(hs[i].value()) + "\"")
                           .append(']');
                    }
                    out.append("]}");
                }
                out.append("]}");
            }
        } catch (Exception e) {
            return "{\"error\":\"" + e.getClass().getSimpleName() + ": "
                    + String.valueOf(e.getMessage()).replace("\\", "\\\\").replace("\"", "'") + "\"}";
        }
        return out.append(']').toString();
    }

    // Keys and values as hex; one over 4 KiB as its length and SHA-256 instead, to keep
    // the vector file small.
    static String hex(ByteBuffer b) {
        if (b == null) return "null";
        byte[] raw = bytesOf(b);
        if (raw.length <= 4096) return "\"" + HEX.formatHex(raw) + "\"";
        try {
            byte[] digest = java.security.MessageDigest.getInstance("SHA-256").digest(raw);
            return "{\"len\":" + raw.length + ",\"sha256\":\"" + HEX.formatHex(digest) + "\"}";
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}

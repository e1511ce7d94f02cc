"""Kafka's record-batch codecs: gzip, snappy (xerial-framed or raw), lz4 (frame) and
zstd, on cramjam.

Owns decompressing a batch's records without ever allocating past a limit (a
decompression bomb stops when the fixed output buffer is full; snappy states its sizes
first, so they are checked before anything is allocated) and compressing them as Kafka's
Java clients do. Translates cramjam's errors into ``CompressionError`` once, here.
"""

from __future__ import annotations

import enum
import struct

import cramjam

__all__ = ["Compression", "CompressionError", "compress", "decompress"]

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, compatible 1
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size
_OUT_FIRST = 64 * 1024  # first guess at a decompressed size; grows 4x up to the limit
_OUT_FULL = "failed to write whole buffer"  # cramjam: the output buffer is too small
# Kafka's default compression levels (KIP-390): gzip 6 (Java's Deflater default),
# lz4 9, zstd 3.
_GZIP_LEVEL, _LZ4_LEVEL, _ZSTD_LEVEL = 6, 9, 3
# snappy-java refuses xerial block sizes under 1 KiB: within a limit of N bytes a stream
# has at most N / 1 KiB blocks, which bounds the loop over them.
XERIAL_MIN_BLOCK = 1024


class CompressionError(ValueError):
    """Compressed records that are corrupt or decompress past the limit."""


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


_INTO = {
    Compression.GZIP: cramjam.gzip.decompress_into,
    Compression.LZ4: cramjam.lz4.decompress_into,
    Compression.ZSTD: cramjam.zstd.decompress_into,
}


def decompress(codec: Compression, src: memoryview, limit: int) -> bytearray:
    """``src`` decompressed, never more than ``limit`` bytes: the output buffer is
    fixed, so a bomb stops when it is full (then the buffer grows, up to the limit)."""
    if codec is Compression.SNAPPY:
        return _snappy(src, limit)
    into = _INTO[codec]
    cap = min(limit, max(_OUT_FIRST, 4 * len(src)))
    while True:
        out = bytearray(cap)
        try:
            size = int(into(src, out))
        except Exception as exc:  # cramjam's errors, translated here once
            if _OUT_FULL not in str(exc):
                raise CompressionError(f"corrupt {codec.name.lower()} data: {exc}") from None
            if cap >= limit:
                raise CompressionError(
                    f"{codec.name.lower()} data decompresses past {limit} bytes"
                ) from None
            cap = min(limit, cap * 4)
            del out  # before the bigger one is allocated
            continue
        del out[size:]
        return out


def _snappy(src: memoryview, limit: int) -> bytearray:
    """Xerial-framed snappy (Java clients) or one raw snappy block (librdkafka). Each
    block states its size first, so sizes are checked before anything is allocated."""
    if src[: len(_XERIAL_MAGIC)] != _XERIAL_MAGIC:
        blocks = [src]
    else:
        if len(src) < len(_XERIAL_HEADER):
            raise CompressionError("truncated xerial snappy header")
        blocks = []
        pos, end = len(_XERIAL_HEADER), len(src)
        while pos < end:
            if len(blocks) >= limit // XERIAL_MIN_BLOCK or end - pos < 4:
                raise CompressionError("bad xerial snappy framing")
            size = int.from_bytes(src[pos : pos + 4], "big")
            pos += 4
            if size > end - pos:
                raise CompressionError("truncated xerial snappy block")
            blocks.append(src[pos : pos + size])
            pos += size
    try:
        sizes = [int(cramjam.snappy.decompress_raw_len(block)) for block in blocks]
        if sum(sizes) > limit:
            raise CompressionError(f"snappy data decompresses past {limit} bytes")
        out = bytearray(sum(sizes))
        view = memoryview(out)
        at = 0
        for block, size in zip(blocks, sizes, strict=True):
            if int(cramjam.snappy.decompress_raw_into(block, view[at : at + size])) != size:
                raise CompressionError("snappy block shorter than it says")
            at += size
    except CompressionError:
        raise
    except Exception as exc:  # cramjam's errors, translated here once
        raise CompressionError(f"corrupt snappy data: {exc}") from None
    return out


def compress(codec: Compression, data: bytes) -> bytes:
    if codec is Compression.GZIP:
        return bytes(cramjam.gzip.compress(data, level=_GZIP_LEVEL))
    if codec is Compression.SNAPPY:
        # Xerial framing, as Java clients write it: Java's reader (snappy-java) and
        # librdkafka, Sarama, franz-go, kafka-python and aiokafka all read it, while some
        # older Java brokers and clients cannot read a raw block.
        parts = [_XERIAL_HEADER]
        for at in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[at : at + _XERIAL_BLOCK]))
            parts += (len(block).to_bytes(4, "big"), block)
        return b"".join(parts)
    if codec is Compression.LZ4:
        # Independent blocks and no content checksum, like Java's KafkaLZ4BlockOutputStream
        # (Kafka's reader refuses linked blocks, KIP-57).
        lz4 = cramjam.lz4.Compressor(level=_LZ4_LEVEL, content_checksum=False, block_linked=False)
        lz4.compress(data)
        return bytes(lz4.finish())
    return bytes(cramjam.zstd.compress(data, level=_ZSTD_LEVEL))

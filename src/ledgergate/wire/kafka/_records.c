/* Walking the records of a Kafka v2 record batch and hashing each one, for ledgergate's
 * produce and fetch paths (wire/kafka/records.py).
 *
 * digests(buf, count, base_offset) -> [(offset, sha256, key size + value size), ...]
 * hex_digests(buf, count) -> (hex sha256 of each record, first offset delta, last)
 *
 * ``buf`` is the batch's records area (after the 61-byte header, decompressed), ``count``
 * its recordCount. Each record is walked exactly as records._scan walks it (the Python
 * reference, held to this byte for byte by tests/wire/kafka/test_records_native.py and
 * tests/native/fuzz.py): its length, attributes, timestamp delta (a 64-bit varint),
 * offset delta, key, value and headers, each checked against the record's length and the
 * buffer's end; a record's digest is SHA-256 of its bytes from keyLength to its end (what
 * the ledger names a message by: key, value and headers), its size the key's and the
 * value's lengths (a null one counts 0). Any defect raises ValueError with the message
 * the reference gives (records.py raises it again as RecordsError): a varint past the end
 * is "record truncated". ``hex_digests`` gives the hashes as lowercase hex strings with
 * the first and last records' offset deltas (None for no records), what the ledger's
 * batch entries hold, without a tuple per record.
 *
 * Every read is bounds-checked against the buffer's length; varints are read as Java's
 * reader takes them (at most 5 bytes for 32 bits, 10 for 64, the value in range).
 * Hashing is OpenSSL 3's SHA-256; nothing here writes a primitive of its own. Pure: no
 * I/O, no clock.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define HASH_SIZE 32
#define MIN_RECORD 7 /* records.py's _MIN_RECORD */

static EVP_MD *sha256_md;

/* Why a walk stopped: the message is formatted into ``msg`` (ValueError's text). */
typedef struct {
    char msg[160];
} Fail;

#define TRUNCATED(f) (snprintf((f)->msg, sizeof((f)->msg), "record truncated"), -1)

/* The zigzag varint at *pos, at most ``bits`` (32 or 64) wide; *pos moves past it. */
static int
varint(const uint8_t *b, Py_ssize_t end, Py_ssize_t *pos, int bits, int64_t *out, Fail *f)
{
    Py_ssize_t p = *pos;
    uint64_t value;
    unsigned shift;
    if (p < 0 || p >= end)
        return TRUNCATED(f);
    if (b[p] < 0x80) {
        value = b[p];
        *pos = p + 1;
        goto done;
    }
    value = b[p] & 0x7F;
    if (p + 1 >= end)
        return TRUNCATED(f);
    if (b[p + 1] < 0x80) {
        value |= (uint64_t)b[p + 1] << 7;
        *pos = p + 2;
        goto done;
    }
    value |= (uint64_t)(b[p + 1] & 0x7F) << 7;
    p += 1;
    shift = 14;
    for (;;) {
        uint8_t c;
        p += 1;
        if (p >= end)
            return TRUNCATED(f);
        c = b[p];
        if (shift + 7 > 64 && ((c & 0x7F) >> (64 - shift))) {
            /* Bits beyond 64: the reference's value >> bits is then non-zero, which it
             * reports once the varint ends (or as too long if it does not end here). */
            if (c >= 0x80) {
                snprintf(f->msg, sizeof(f->msg), "varint at byte %zd is too long", p);
                return -1;
            }
            snprintf(f->msg, sizeof(f->msg), "varint at byte %zd is out of range", p);
            return -1;
        }
        value |= (uint64_t)(c & 0x7F) << shift;
        if (c < 0x80)
            break;
        shift += 7;
        if (shift >= (unsigned)bits) {
            snprintf(f->msg, sizeof(f->msg), "varint at byte %zd is too long", p);
            return -1;
        }
    }
    if (bits < 64 && (value >> bits)) {
        snprintf(f->msg, sizeof(f->msg), "varint at byte %zd is out of range", p);
        return -1;
    }
    *pos = p + 1;
done:
    *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
    return 0;
}

/* One record as the reference's span names it (the parts the callers use). */
typedef struct {
    int64_t off_delta;
    Py_ssize_t body, rec_end;
    int64_t klen, vlen;
} Span;

/* The record at *pos (records._scan's loop body, check for check). */
static int
record(const uint8_t *b, Py_ssize_t end, Py_ssize_t *at, Span *s, Fail *f)
{
    Py_ssize_t pos = *at, rec_end, body, kpos, vpos;
    int64_t length, ts_delta, off_delta, klen, vlen, hcount, hklen, hvlen, i;
    if (varint(b, end, &pos, 32, &length, f))
        return -1;
    rec_end = pos + (Py_ssize_t)length;
    if (length < MIN_RECORD - 1 || rec_end > end) {
        snprintf(f->msg, sizeof(f->msg), "record at byte %zd: bad length %lld", pos,
                 (long long)length);
        return -1;
    }
    if (pos + 1 >= end)
        return TRUNCATED(f);
    if (b[pos + 1] < 0x80) {
        pos += 2;
    } else {
        pos += 1;
        if (varint(b, end, &pos, 64, &ts_delta, f))
            return -1;
    }
    if (varint(b, end, &pos, 32, &off_delta, f))
        return -1;
    body = pos;
    kpos = pos;
    if (varint(b, end, &kpos, 32, &klen, f))
        return -1;
    if (klen < 0) {
        pos = kpos;
        if (klen != -1) {
            snprintf(f->msg, sizeof(f->msg), "record at byte %zd: bad key length %lld", body,
                     (long long)klen);
            return -1;
        }
    } else {
        pos = kpos + (Py_ssize_t)klen;
        if (pos > rec_end) {
            snprintf(f->msg, sizeof(f->msg), "record at byte %zd: key overruns the record",
                     body);
            return -1;
        }
    }
    vpos = pos;
    if (varint(b, end, &vpos, 32, &vlen, f))
        return -1;
    if (vlen < 0) {
        pos = vpos;
        if (vlen != -1) {
            snprintf(f->msg, sizeof(f->msg), "record at byte %zd: bad value length %lld",
                     body, (long long)vlen);
            return -1;
        }
    } else {
        pos = vpos + (Py_ssize_t)vlen;
    }
    if (pos >= rec_end) {
        snprintf(f->msg, sizeof(f->msg), "record at byte %zd: value overruns the record", body);
        return -1;
    }
    /* pos < rec_end <= end: the header count's first byte is in the buffer. */
    if (b[pos] == 0) {
        pos += 1;
    } else {
        if (varint(b, end, &pos, 32, &hcount, f))
            return -1;
        if (hcount < 0 || 2 * hcount > (int64_t)(rec_end - pos)) {
            snprintf(f->msg, sizeof(f->msg), "record at byte %zd: bad header count %lld",
                     body, (long long)hcount);
            return -1;
        }
        for (i = 0; i < hcount; i++) {
            if (varint(b, end, &pos, 32, &hklen, f))
                return -1;
            pos += (Py_ssize_t)hklen;
            if (hklen < 0 || pos > rec_end) {
                snprintf(f->msg, sizeof(f->msg), "record at byte %zd: bad header key length",
                         body);
                return -1;
            }
            if (varint(b, end, &pos, 32, &hvlen, f))
                return -1;
            if (hvlen > 0)
                pos += (Py_ssize_t)hvlen;
            if (hvlen < -1 || pos > rec_end) {
                snprintf(f->msg, sizeof(f->msg),
                         "record at byte %zd: bad header value length", body);
                return -1;
            }
        }
    }
    if (pos != rec_end) {
        snprintf(f->msg, sizeof(f->msg),
                 "record at byte %zd does not end where its length says", body);
        return -1;
    }
    s->off_delta = off_delta;
    s->body = body;
    s->rec_end = rec_end;
    s->klen = klen;
    s->vlen = vlen;
    *at = pos;
    return 0;
}

static int
sha256(EVP_MD_CTX *ctx, const uint8_t *p, Py_ssize_t n, unsigned char out[HASH_SIZE])
{
    unsigned int len = 0;
    if (!EVP_DigestInit_ex2(ctx, sha256_md, NULL) || !EVP_DigestUpdate(ctx, p, (size_t)n) ||
        !EVP_DigestFinal_ex(ctx, out, &len) || len != HASH_SIZE) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return -1;
    }
    return 0;
}

/* The walk both functions share: each record hashed, then handed to ``emit``. */
typedef int (*Emit)(void *state, const Span *s, const unsigned char digest[HASH_SIZE]);

static int
walk(Py_buffer *view, Py_ssize_t count, Emit emit, void *state)
{
    const uint8_t *b = (const uint8_t *)view->buf;
    Py_ssize_t end = view->len, pos = 0, i;
    EVP_MD_CTX *ctx;
    Fail f;
    Span s;
    unsigned char digest[HASH_SIZE];
    int rc = -1;
    if ((ctx = EVP_MD_CTX_new()) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < count; i++) {
        if (record(b, end, &pos, &s, &f)) {
            PyErr_SetString(PyExc_ValueError, f.msg);
            goto out;
        }
        if (sha256(ctx, b + s.body, s.rec_end - s.body, digest) || emit(state, &s, digest))
            goto out;
    }
    if (pos != end) {
        PyErr_Format(PyExc_ValueError, "%zd bytes after the last of %zd records", end - pos,
                     count);
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

typedef struct {
    PyObject *list;
    int64_t base;
} DigestsState;

static int
emit_tuple(void *state, const Span *s, const unsigned char digest[HASH_SIZE])
{
    DigestsState *st = (DigestsState *)state;
    long long offset, size = (long long)((s->klen > 0 ? s->klen : 0) +
                                         (s->vlen > 0 ? s->vlen : 0));
    PyObject *t, *off;
    int rc;
    if (__builtin_add_overflow(st->base, s->off_delta, &offset)) {
        /* Past int64 (a hostile base offset): Python's ints add it, as the reference does. */
        PyObject *a = PyLong_FromLongLong(st->base), *d = PyLong_FromLongLong(s->off_delta);
        off = (a && d) ? PyNumber_Add(a, d) : NULL;
        Py_XDECREF(a);
        Py_XDECREF(d);
    } else {
        off = PyLong_FromLongLong(offset);
    }
    if (off == NULL)
        return -1;
    t = Py_BuildValue("(Ny#L)", off, (const char *)digest, (Py_ssize_t)HASH_SIZE, size);
    if (t == NULL)
        return -1;
    rc = PyList_Append(st->list, t);
    Py_DECREF(t);
    return rc;
}

typedef struct {
    PyObject *list;
    int64_t first, last;
    int any;
} HexState;

static int
emit_hex(void *state, const Span *s, const unsigned char digest[HASH_SIZE])
{
    static const char hexdigits[] = "0123456789abcdef";
    HexState *st = (HexState *)state;
    PyObject *text = PyUnicode_New(2 * HASH_SIZE, 127);
    Py_UCS1 *out;
    int i, rc;
    if (text == NULL)
        return -1;
    out = PyUnicode_1BYTE_DATA(text);
    for (i = 0; i < HASH_SIZE; i++) {
        out[2 * i] = (Py_UCS1)hexdigits[digest[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)hexdigits[digest[i] & 0x0F];
    }
    rc = PyList_Append(st->list, text);
    Py_DECREF(text);
    if (!st->any)
        st->first = s->off_delta;
    st->last = s->off_delta;
    st->any = 1;
    return rc;
}

static PyObject *
digests(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t count;
    long long base;
    DigestsState st;
    if (!PyArg_ParseTuple(args, "y*nL", &view, &count, &base))
        return NULL;
    st.base = base;
    st.list = PyList_New(0);
    if (st.list == NULL || walk(&view, count, emit_tuple, &st)) {
        PyBuffer_Release(&view);
        Py_XDECREF(st.list);
        return NULL;
    }
    PyBuffer_Release(&view);
    return st.list;
}

static PyObject *
hex_digests(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t count;
    HexState st;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*n", &view, &count))
        return NULL;
    st.any = 0;
    st.first = st.last = 0;
    st.list = PyList_New(0);
    if (st.list == NULL || walk(&view, count, emit_hex, &st)) {
        PyBuffer_Release(&view);
        Py_XDECREF(st.list);
        return NULL;
    }
    PyBuffer_Release(&view);
    if (!st.any)
        out = Py_BuildValue("(OOO)", st.list, Py_None, Py_None);
    else
        out = Py_BuildValue("(OLL)", st.list, (long long)st.first, (long long)st.last);
    Py_DECREF(st.list);
    return out;
}

static PyMethodDef methods[] = {
    {"digests", digests, METH_VARARGS,
     "digests(buf, count, base_offset) -> [(offset, sha256, size), ...]"},
    {"hex_digests", hex_digests, METH_VARARGS,
     "hex_digests(buf, count) -> ([hex sha256, ...], first delta, last delta)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledgergate.wire.kafka._records",
    "Kafka v2 records walked and hashed (see _records.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}

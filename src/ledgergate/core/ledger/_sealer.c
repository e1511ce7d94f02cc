/* Sealing a run of typed drafts onto a ledger stream, for ledgergate's journaled writer.
 *
 * seal_run(stream, size, head, tree, drafts, start, stop, dumps, option, row_type)
 *     -> (n, head, journal, rows)
 *
 * The per-entry work of Chain.seal + LedgerWriter._seal + journal.encode_entry in one
 * native loop, for the drafts that need nothing else: ``typed`` drafts without payloads
 * whose ts_ns is a non-negative int, whose kind is a non-empty str and whose fields (an
 * exact dict) use none of the chain's reserved names. For each such draft, from
 * drafts[start] up to drafts[stop] (excluded), in order:
 *   doc       = {**fields, "stream", "seq": size, "ts_ns", "kind", "prev_hash": head hex}
 *   canonical = dumps(doc, option=option)        (orjson with sorted keys: the same
 *                                                  bytes as canonical_json_typed)
 *   h         = SHA-256(0x00 || canonical)        (the entry hash and Merkle leaf)
 *   tree      : the compact range's subtree roots, merged as CompactRange.append does
 *               (SHA-256(0x01 || left || right)), a list mutated in place
 *   journal  += the ``E`` record of core/ledger/journal.py: type, u32 LE body length,
 *               u32 LE CRC-32 of the body seeded with the type byte, body = h || canonical
 *   rows     += row_type._make((stream, seq, ts_ns, kind, session_id, subject,
 *                              connection, canonical, h))
 *               (row_type: a tuple subclass of those nine columns; session_id,
 *               connection and the identity's subject as services/journal.py's
 *               index_text and subject_of give them: a string as a plain str, else None)
 * It stops at the first draft that does not qualify, or whose encoding dumps refuses
 * with a TypeError (orjson's JSONEncodeError: an integer beyond 64 bits, a lone
 * surrogate), and returns how many it sealed: the caller seals that draft the checked
 * way (or raises its ChainError) and calls again. ``n`` is 0 when drafts[start] does not
 * qualify; ``head`` is then returned unchanged. Any other exception is raised.
 *
 * The tree list is changed in place for every sealed entry, and also for the entries
 * sealed before an exception: callers hand in a copy and keep it only on success
 * (Chain.seal_run). Hashing is OpenSSL's SHA-256 (OpenSSL 3) and the CRC is zlib's;
 * nothing here writes a primitive of its own. Pure: no I/O, no clock.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define HASH_SIZE 32
#define REC_HDR 9

static EVP_MD *sha256_md; /* fetched once at import */

static PyObject *s_stream, *s_seq, *s_ts_ns, *s_kind, *s_prev_hash, *s_entry_hash;
static PyObject *s_fields, *s_typed, *s_payloads, *s_session_id, *s_identity,
    *s_connection, *s_subject, *s_option;
static PyObject *kw_option; /* ("option",): dumps' keyword */

/* SHA-256 of prefix || a || b, into out. */
static int
digest3(EVP_MD_CTX *ctx, unsigned char prefix, const void *a, size_t na, const void *b,
        size_t nb, unsigned char *out)
{
    unsigned int len = 0;
    if (!EVP_DigestInit_ex2(ctx, sha256_md, NULL) || !EVP_DigestUpdate(ctx, &prefix, 1) ||
        (na && !EVP_DigestUpdate(ctx, a, na)) || (nb && !EVP_DigestUpdate(ctx, b, nb)) ||
        !EVP_DigestFinal_ex(ctx, out, &len) || len != HASH_SIZE) {
        ERR_clear_error();
        PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
        return -1;
    }
    return 0;
}

static PyObject *
hex_str(const unsigned char *h)
{
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(2 * HASH_SIZE, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    for (int i = 0; i < HASH_SIZE; i++) {
        d[2 * i] = (Py_UCS1)digits[h[i] >> 4];
        d[2 * i + 1] = (Py_UCS1)digits[h[i] & 15];
    }
    return s;
}

/* services/journal.py index_text(v): a string as a plain str, else None (new ref). */
static PyObject *
index_text(PyObject *v)
{
    if (v != NULL && PyUnicode_Check(v))
        return PyUnicode_FromObject(v); /* the object itself if exactly a str */
    Py_RETURN_NONE;
}

/* index_text(d.get(key)) for a dict d (new reference). */
static PyObject *
text_field(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    if (v == NULL && PyErr_Occurred())
        return NULL;
    return index_text(v);
}

/* services/journal.py subject_of(fields.get("identity")) (new reference). */
static PyObject *
subject_of(PyObject *fields)
{
    PyObject *ident = PyDict_GetItemWithError(fields, s_identity);
    if (ident == NULL && PyErr_Occurred())
        return NULL;
    if (ident != NULL && PyDict_Check(ident))
        return text_field(ident, s_subject);
    return index_text(ident);
}

/* 1: the draft can be sealed here; 0: not (the caller's checked path decides);
 * -1: error (an exception is set). *fields, *ts and *kind receive new references to
 * the draft's attributes as they are read (the caller releases whichever are set). */
static int
qualifies(PyObject *draft, PyObject **fields, PyObject **ts, PyObject **kind)
{
    PyObject *typed = PyObject_GetAttr(draft, s_typed);
    if (typed == NULL)
        return -1;
    int ok = typed == Py_True;
    Py_DECREF(typed);
    if (!ok)
        return 0;
    PyObject *payloads = PyObject_GetAttr(draft, s_payloads);
    if (payloads == NULL)
        return -1;
    ok = PyTuple_CheckExact(payloads) && PyTuple_GET_SIZE(payloads) == 0;
    Py_DECREF(payloads);
    if (!ok)
        return 0;
    if ((*fields = PyObject_GetAttr(draft, s_fields)) == NULL ||
        (*ts = PyObject_GetAttr(draft, s_ts_ns)) == NULL ||
        (*kind = PyObject_GetAttr(draft, s_kind)) == NULL)
        return -1;
    if (!PyDict_CheckExact(*fields) || !PyLong_CheckExact(*ts) || !PyUnicode_CheckExact(*kind) ||
        PyUnicode_GET_LENGTH(*kind) == 0)
        return 0;
    int overflow = 0;
    long long t = PyLong_AsLongLongAndOverflow(*ts, &overflow);
    if (t == -1 && PyErr_Occurred())
        return -1;
    if (overflow || t < 0)
        return 0;
    PyObject *reserved[] = {s_stream, s_seq, s_ts_ns, s_kind, s_prev_hash, s_entry_hash};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        int has = PyDict_Contains(*fields, reserved[i]);
        if (has != 0)
            return has < 0 ? -1 : 0;
    }
    return 1;
}

/* Append leaf h to the compact range (list of 32-byte bytes, largest subtree first) of
 * a tree that has ``size`` leaves. */
static int
tree_append(EVP_MD_CTX *ctx, PyObject *tree, unsigned long long size, const unsigned char *h)
{
    unsigned char cur[HASH_SIZE];
    memcpy(cur, h, HASH_SIZE);
    while (size & 1) {
        Py_ssize_t last = PyList_GET_SIZE(tree) - 1;
        if (last < 0) {
            PyErr_SetString(PyExc_ValueError, "the compact range is shorter than its size");
            return -1;
        }
        PyObject *left = PyList_GET_ITEM(tree, last);
        if (!PyBytes_CheckExact(left) || PyBytes_GET_SIZE(left) != HASH_SIZE) {
            PyErr_SetString(PyExc_ValueError, "a subtree root is not 32 bytes");
            return -1;
        }
        if (digest3(ctx, 0x01, PyBytes_AS_STRING(left), HASH_SIZE, cur, HASH_SIZE, cur) < 0)
            return -1;
        if (PyList_SetSlice(tree, last, last + 1, NULL) < 0)
            return -1;
        size >>= 1;
    }
    PyObject *node = PyBytes_FromStringAndSize((const char *)cur, HASH_SIZE);
    if (node == NULL)
        return -1;
    int r = PyList_Append(tree, node);
    Py_DECREF(node);
    return r;
}

static void
put_u32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* The journal's E record of (h, canonical), appended to *out (a growing bytearray). */
static int
journal_record(PyObject *out, const unsigned char *h, const char *canon, Py_ssize_t n)
{
    Py_ssize_t body = HASH_SIZE + n;
    if (body > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "an entry is too large for the journal");
        return -1;
    }
    Py_ssize_t at = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, at + REC_HDR + body) < 0)
        return -1;
    unsigned char *p = (unsigned char *)PyByteArray_AS_STRING(out) + at;
    uLong crc = crc32(0x45 /* 'E': the seed is the type byte */, h, HASH_SIZE);
    const unsigned char *c = (const unsigned char *)canon;
    Py_ssize_t left = n;
    while (left > 0) { /* zlib takes uInt lengths */
        uInt chunk = left > (1 << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, c, chunk);
        c += chunk;
        left -= chunk;
    }
    p[0] = 'E';
    put_u32le(p + 1, (uint32_t)body);
    put_u32le(p + 5, (uint32_t)crc);
    memcpy(p + REC_HDR, h, HASH_SIZE);
    memcpy(p + REC_HDR + HASH_SIZE, canon, (size_t)n);
    return 0;
}

/* The row: row_type(stream, seq, ts, kind, session_id, subject, connection, canon, h). */
static PyObject *
make_row(PyObject *row_type, PyObject *stream, PyObject *seq, PyObject *ts, PyObject *kind,
         PyObject *fields, PyObject *canon, PyObject *hash)
{
    PyObject *sid = text_field(fields, s_session_id);
    PyObject *subj = sid ? subject_of(fields) : NULL;
    PyObject *conn = subj ? text_field(fields, s_connection) : NULL;
    if (conn == NULL) {
        Py_XDECREF(sid);
        Py_XDECREF(subj);
        return NULL;
    }
    /* tuple.__new__(row_type, items): what a NamedTuple's _make does, without its
     * Python-level __new__ */
    PyObject *items = PyTuple_Pack(9, stream, seq, ts, kind, sid, subj, conn, canon, hash);
    Py_DECREF(sid);
    Py_DECREF(subj);
    Py_DECREF(conn);
    if (items == NULL)
        return NULL;
    PyObject *targs = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (targs == NULL)
        return NULL;
    PyObject *row = PyTuple_Type.tp_new((PyTypeObject *)row_type, targs, NULL);
    Py_DECREF(targs);
    return row;
}

static PyObject *
seal_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "seal_run() takes 10 arguments");
        return NULL;
    }
    PyObject *stream = args[0], *size_o = args[1], *head_o = args[2], *tree = args[3];
    PyObject *drafts = args[4], *start_o = args[5], *stop_o = args[6], *dumps = args[7];
    PyObject *option = args[8], *row_type = args[9];
    if (!PyUnicode_CheckExact(stream) || !PyLong_CheckExact(size_o) ||
        !PyBytes_CheckExact(head_o) || PyBytes_GET_SIZE(head_o) != HASH_SIZE ||
        !PyList_CheckExact(tree) || !PyList_CheckExact(drafts) || !PyLong_CheckExact(start_o) ||
        !PyLong_CheckExact(stop_o) ||
        !PyType_Check(row_type) || !PyType_IsSubtype((PyTypeObject *)row_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "seal_run(stream: str, size: int, head: bytes[32], tree: list, "
                        "drafts: list, start: int, stop: int, dumps, option, row_type)");
        return NULL;
    }
    unsigned long long size = PyLong_AsUnsignedLongLong(size_o);
    if (size == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t start = PyLong_AsSsize_t(start_o);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t stop_at = PyLong_AsSsize_t(stop_o);
    if (stop_at == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0 || start > PyList_GET_SIZE(drafts) || stop_at < start) {
        PyErr_SetString(PyExc_ValueError, "start or stop is out of range");
        return NULL;
    }
    unsigned char head[HASH_SIZE];
    memcpy(head, PyBytes_AS_STRING(head_o), HASH_SIZE);

    PyObject *journal = PyByteArray_FromStringAndSize(NULL, 0);
    PyObject *rows = PyList_New(0);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    Py_ssize_t n = 0;
    int failed = journal == NULL || rows == NULL;
    if (ctx == NULL && !failed) {
        PyErr_NoMemory();
        failed = 1;
    }
    /* The list's length is read at every step and each draft is held while it is read:
     * its attributes may run Python code that changes the list. */
    for (Py_ssize_t i = start; !failed && i < stop_at && i < PyList_GET_SIZE(drafts); i++) {
        PyObject *draft = Py_NewRef(PyList_GET_ITEM(drafts, i));
        PyObject *fields = NULL, *ts = NULL, *kind = NULL, *doc = NULL, *canon = NULL;
        PyObject *seq = NULL, *hash = NULL, *row = NULL, *prev = NULL;
        int q = qualifies(draft, &fields, &ts, &kind);
        int stop = q <= 0;
        failed = q < 0;
        if (!stop) {
            /* {**fields, stream, seq, ts_ns, kind, prev_hash}: fields hold none of them */
            doc = PyDict_Copy(fields);
            seq = PyLong_FromUnsignedLongLong(size);
            prev = hex_str(head);
            failed = doc == NULL || seq == NULL || prev == NULL ||
                     PyDict_SetItem(doc, s_stream, stream) < 0 ||
                     PyDict_SetItem(doc, s_seq, seq) < 0 ||
                     PyDict_SetItem(doc, s_ts_ns, ts) < 0 ||
                     PyDict_SetItem(doc, s_kind, kind) < 0 ||
                     PyDict_SetItem(doc, s_prev_hash, prev) < 0;
            stop = failed;
        }
        if (!stop) {
            PyObject *call[2] = {doc, option};
            canon = PyObject_Vectorcall(dumps, call, 1, kw_option);
            if (canon == NULL) {
                /* refused (JSONEncodeError, a TypeError: big int, lone surrogate): the
                 * checked path decides; anything else (memory) is raised */
                if (PyErr_ExceptionMatches(PyExc_TypeError))
                    PyErr_Clear();
                else
                    failed = 1;
                stop = 1;
            }
            else if (!PyBytes_CheckExact(canon)) {
                PyErr_SetString(PyExc_TypeError, "dumps() did not return bytes");
                failed = stop = 1;
            }
        }
        if (!stop) {
            unsigned char h[HASH_SIZE];
            const char *c = PyBytes_AS_STRING(canon);
            Py_ssize_t cn = PyBytes_GET_SIZE(canon);
            failed = digest3(ctx, 0x00, c, (size_t)cn, NULL, 0, h) < 0 ||
                     (hash = PyBytes_FromStringAndSize((const char *)h, HASH_SIZE)) == NULL ||
                     (row = make_row(row_type, stream, seq, ts, kind, fields, canon, hash)) ==
                         NULL ||
                     journal_record(journal, h, c, cn) < 0 || PyList_Append(rows, row) < 0 ||
                     tree_append(ctx, tree, size, h) < 0;
            if (!failed) {
                memcpy(head, h, HASH_SIZE);
                size++;
                n++;
            }
            stop = failed;
        }
        Py_XDECREF(fields);
        Py_XDECREF(ts);
        Py_XDECREF(kind);
        Py_XDECREF(doc);
        Py_XDECREF(canon);
        Py_XDECREF(seq);
        Py_XDECREF(hash);
        Py_XDECREF(row);
        Py_XDECREF(prev);
        Py_DECREF(draft);
        if (stop)
            break;
    }
    EVP_MD_CTX_free(ctx);
    if (failed) {
        Py_XDECREF(journal);
        Py_XDECREF(rows);
        return NULL;
    }
    PyObject *jb = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(journal),
                                             PyByteArray_GET_SIZE(journal));
    Py_DECREF(journal);
    if (jb == NULL) {
        Py_DECREF(rows);
        return NULL;
    }
    return Py_BuildValue("(ny#NN)", n, (const char *)head, (Py_ssize_t)HASH_SIZE, jb, rows);
}

static PyMethodDef methods[] = {
    {"seal_run", (PyCFunction)(void (*)(void))seal_run, METH_FASTCALL,
     "seal_run(stream, size, head, tree, drafts, start, stop, dumps, option, row_type) -> "
     "(n, head, journal, rows): seal the typed drafts of drafts[start:stop] (see _sealer.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledgergate.core.ledger._sealer",
    "Sealing runs of typed drafts onto a journaled ledger stream (see _sealer.c).", -1,
    methods,
};

#define INTERN(var, text)                                                                  \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                 \
        return NULL;

PyMODINIT_FUNC
PyInit__sealer(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256_md == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    INTERN(s_stream, "stream");
    INTERN(s_seq, "seq");
    INTERN(s_ts_ns, "ts_ns");
    INTERN(s_kind, "kind");
    INTERN(s_prev_hash, "prev_hash");
    INTERN(s_entry_hash, "entry_hash");
    INTERN(s_fields, "fields");
    INTERN(s_typed, "typed");
    INTERN(s_payloads, "payloads");
    INTERN(s_session_id, "session_id");
    INTERN(s_identity, "identity");
    INTERN(s_connection, "connection");
    INTERN(s_subject, "subject");
    INTERN(s_option, "option");
    if ((kw_option = PyTuple_Pack(1, s_option)) == NULL)
        return NULL;
    return PyModule_Create(&module);
}

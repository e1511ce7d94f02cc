/*
 * ledgergate.wire.pg._datarows: runs of DataRow messages walked and rewritten in C.
 *
 * The native twin of ``results.parse_data_row`` / ``build_data_row`` and of the
 * mask functions ``redact``, ``fixed``, ``null`` and ``partial`` in
 * ``core.masking.functions`` (same output, byte for byte: tests/wire/pg/test_datarows.py
 * compares the two on generated values). A result under a mask plan costs one call per
 * read instead of a Python loop per row; values the C code does not handle itself
 * (tokenize, content detectors, values that are not valid UTF-8) go to a Python
 * callback, one call per value. Sans-IO: bytes in, bytes out, no state between calls.
 *
 *   walk(buf, pos) -> (end, rows, tags, open_at)
 *       A relayed read's frame headers from ``pos``: DataRow and CopyData messages
 *       counted, complete CommandComplete tags, where an incomplete one's body begins
 *       (see ``datarows_walk``; ``frames.walk_reference`` is the definition).
 *
 *   skip(buf, pos) -> (end, rows)
 *       The run of complete DataRow messages starting at ``pos``: where it ends (a
 *       message of another type, or one not complete in ``buf``) and how many rows.
 *
 *   gather(buf, pos, cols) -> (end, rows, values)
 *       The same run's values of the columns ``cols``: ``values[k]`` lists column
 *       ``cols[k]``'s value in each row (bytes, or None for NULL and for a row without
 *       that column).
 *
 *   rewrite(buf, pos, actions, callback[, feeds]) -> (out, end, rows, counts, changed)
 *       The same run, each row rebuilt with ``actions[i]`` applied to column ``i``:
 *         None                      the value passes as it is
 *         (1, 0, 0, b"")            NULL
 *         (2, 0, 0, text)           the constant ``text`` (redact, fixed)
 *         (3, keep_last, domain, b"")   partial: e-mail keeps its first character and
 *                                   domain (when ``domain``), a grouped number its last
 *                                   ``keep_last`` digits, anything else its last
 *                                   ``keep_last`` characters
 *         (4, 0, 0, b"")            callback(i, value) -> bytes | None (NULL); returning
 *                                   ``value`` itself means unchanged
 *         (5, 0, 0, b"")            ``feeds[i][row]``: the value computed beforehand
 *                                   from ``gather`` (bytes, or None for NULL)
 *       ``counts[i]``: non-NULL values of column ``i`` masked by actions 1-3 (the
 *       callback counts its own). ``changed``: whether any byte differs from the input.
 *       A malformed DataRow raises ValueError: nothing of it may pass unmasked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { A_PASS = 0, A_NULL = 1, A_CONST = 2, A_PARTIAL = 3, A_CALL = 4, A_FEED = 5 };

typedef struct {
    int code;
    Py_ssize_t keep_last;
    int domain;
    const char *text;
    Py_ssize_t text_len;
} action_t;

typedef struct {
    char *p;
    Py_ssize_t len;
    Py_ssize_t cap;
} outbuf_t;

static int
ob_reserve(outbuf_t *ob, Py_ssize_t more)
{
    if (ob->len + more <= ob->cap)
        return 0;
    Py_ssize_t cap = ob->cap ? ob->cap : 4096;
    while (cap < ob->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Realloc(ob->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ob->p = p;
    ob->cap = cap;
    return 0;
}

static inline int
ob_put(outbuf_t *ob, const void *src, Py_ssize_t n)
{
    if (ob_reserve(ob, n) < 0)
        return -1;
    memcpy(ob->p + ob->len, src, (size_t)n);
    ob->len += n;
    return 0;
}

static inline int
ob_fill(outbuf_t *ob, char c, Py_ssize_t n)
{
    if (ob_reserve(ob, n) < 0)
        return -1;
    memset(ob->p + ob->len, c, (size_t)n);
    ob->len += n;
    return 0;
}

static inline void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t
get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline int
ob_be32(outbuf_t *ob, int32_t v)
{
    if (ob_reserve(ob, 4) < 0)
        return -1;
    put_be32((unsigned char *)ob->p + ob->len, (uint32_t)v);
    ob->len += 4;
    return 0;
}

/* Strict UTF-8, as Python's decoder: no overlongs, surrogates or code points above
 * U+10FFFF. Sets *cps to the number of code points. */
static int
utf8_valid(const unsigned char *s, Py_ssize_t n, Py_ssize_t *cps)
{
    Py_ssize_t i = 0, count = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
        }
        else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80)
                return 0;
            i += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n)
                return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80)
                return 0;
            if (c == 0xE0 && c1 < 0xA0)
                return 0;
            if (c == 0xED && c1 > 0x9F)
                return 0;
            i += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n)
                return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && c1 < 0x90)
                return 0;
            if (c == 0xF4 && c1 > 0x8F)
                return 0;
            i += 4;
        }
        else {
            return 0;
        }
        count++;
    }
    *cps = count;
    return 1;
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline int
is_sep(unsigned char c)
{
    return c == ' ' || c == '.' || c == '-';
}

/* s[j:] matches \d+(?:[ .-]\d+)* whole. */
static int
digit_groups(const unsigned char *s, Py_ssize_t j, Py_ssize_t n)
{
    if (j >= n || !is_digit(s[j]) || !is_digit(s[n - 1]))
        return 0;
    for (Py_ssize_t k = j + 1; k < n; k++) {
        if (is_digit(s[k]))
            continue;
        if (!is_sep(s[k]) || !is_digit(s[k - 1]))
            return 0;
    }
    return 1;
}

/* \(\d+\)[ .-]? at s[j]: the index after it, or -1. */
static Py_ssize_t
paren_group(const unsigned char *s, Py_ssize_t j, Py_ssize_t n)
{
    if (j >= n || s[j] != '(')
        return -1;
    Py_ssize_t k = j + 1;
    while (k < n && is_digit(s[k]))
        k++;
    if (k == j + 1 || k >= n || s[k] != ')')
        return -1;
    k++;
    if (k < n && is_sep(s[k]))
        k++;
    return k;
}

/* functions._GROUPED_NUMBER.fullmatch:
 *   \+?\d{1,3}[ .-]?\(\d+\)[ .-]?\d+(?:[ .-]\d+)*  |  \+?(?:\(\d+\)[ .-]?)?\d+(?:[ .-]\d+)*
 */
static int
grouped_number(const unsigned char *s, Py_ssize_t n)
{
    Py_ssize_t i = (n > 0 && s[0] == '+') ? 1 : 0;
    Py_ssize_t d = i;
    while (d < n && is_digit(s[d]))
        d++;
    if (d - i >= 1 && d - i <= 3) {
        Py_ssize_t k = d;
        if (k < n && is_sep(s[k]))
            k++;
        k = paren_group(s, k, n);
        if (k >= 0 && digit_groups(s, k, n))
            return 1;
    }
    if (i < n && s[i] == '(') {
        Py_ssize_t k = paren_group(s, i, n);
        return k >= 0 && digit_groups(s, k, n);
    }
    return digit_groups(s, i, n);
}

static inline Py_ssize_t
utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* functions._partial on a valid UTF-8 value of ``cps`` code points. */
static int
partial(outbuf_t *ob, const unsigned char *s, Py_ssize_t n, Py_ssize_t cps, Py_ssize_t keep,
        int domain)
{
    if (domain) {
        Py_ssize_t at = n - 1;
        while (at >= 0 && s[at] != '@')
            at--;
        if (at > 0 && at < n - 1) {
            if (ob_put(ob, s, utf8_len(s[0])) < 0 || ob_put(ob, "***@", 4) < 0)
                return -1;
            return ob_put(ob, s + at + 1, n - at - 1);
        }
    }
    if (grouped_number(s, n)) {
        Py_ssize_t total = 0;
        for (Py_ssize_t k = 0; k < n; k++)
            total += is_digit(s[k]);
        Py_ssize_t hide = total - (total <= keep ? 0 : keep);
        if (ob_reserve(ob, n) < 0)
            return -1;
        char *o = ob->p + ob->len;
        for (Py_ssize_t k = 0; k < n; k++) {
            if (hide > 0 && is_digit(s[k])) {
                o[k] = '*';
                hide--;
            }
            else {
                o[k] = (char)s[k];
            }
        }
        ob->len += n;
        return 0;
    }
    if (cps <= keep)
        return ob_fill(ob, '*', cps);
    /* The last ``keep`` code points start after the first cps - keep of them. */
    Py_ssize_t skip = cps - keep, k = 0;
    while (skip > 0) {
        k += utf8_len(s[k]);
        skip--;
    }
    if (ob_fill(ob, '*', cps - keep) < 0)
        return -1;
    return ob_put(ob, s + k, n - k);
}

static int
parse_actions(PyObject *seq, action_t **out, Py_ssize_t *nout)
{
    PyObject *fast = PySequence_Fast(seq, "actions must be a sequence");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    action_t *a = PyMem_Calloc(n ? (size_t)n : 1, sizeof(action_t));
    if (a == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (item == Py_None) {
            a[i].code = A_PASS;
            continue;
        }
        int code, domain;
        Py_ssize_t keep;
        const char *text;
        Py_ssize_t tlen;
        if (!PyTuple_Check(item)
            || !PyArg_ParseTuple(item, "inpy#", &code, &keep, &domain, &text, &tlen)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "an action is None or (code, int, bool, bytes)");
            PyMem_Free(a);
            Py_DECREF(fast);
            return -1;
        }
        if (code < A_PASS || code > A_FEED || keep < 0) {
            PyErr_Format(PyExc_ValueError, "bad action for column %zd", i);
            PyMem_Free(a);
            Py_DECREF(fast);
            return -1;
        }
        a[i].code = code;
        a[i].keep_last = keep;
        a[i].domain = domain;
        a[i].text = text; /* borrowed from a bytes object the tuple holds */
        a[i].text_len = tlen;
    }
    *out = a;
    *nout = n;
    /* ``fast`` keeps the bytes in the action tuples alive: the caller holds ``seq``. */
    Py_DECREF(fast);
    return 0;
}

/* The DataRow at ``pos``: 1 (``*body``, ``*blen``, ``*ncols`` set), 0 when the run ends
 * there (another message type, or one not complete yet), -1 with ValueError set. */
static int
row_at(const unsigned char *b, Py_ssize_t n, Py_ssize_t pos, const unsigned char **body,
       Py_ssize_t *blen, int *ncols)
{
    if (pos + 5 > n || b[pos] != 'D')
        return 0;
    uint32_t ln = get_be32(b + pos + 1);
    if (ln < 4 || (Py_ssize_t)ln > n - pos - 1)
        return 0; /* incomplete: the rest waits for more bytes */
    *body = b + pos + 5;
    *blen = (Py_ssize_t)ln - 4;
    if (*blen < 2) {
        PyErr_SetString(PyExc_ValueError, "DataRow without a column count");
        return -1;
    }
    *ncols = (int16_t)(((*body)[0] << 8) | (*body)[1]);
    if (*ncols < 0) {
        PyErr_SetString(PyExc_ValueError, "DataRow with a negative column count");
        return -1;
    }
    return 1;
}

/* The next value's length at ``*p`` of a row body (-1: NULL), ``*p`` moved past the
 * length; -1 with ValueError set when it does not fit the message. */
static int
value_at(const unsigned char *body, Py_ssize_t blen, Py_ssize_t *p, int32_t *vlen)
{
    if (*p + 4 > blen) {
        PyErr_SetString(PyExc_ValueError, "DataRow shorter than its columns");
        return -1;
    }
    *vlen = (int32_t)get_be32(body + *p);
    *p += 4;
    if (*vlen < -1 || (*vlen > 0 && *vlen > blen - *p)) {
        PyErr_SetString(PyExc_ValueError, "DataRow value longer than its message");
        return -1;
    }
    return 0;
}

static PyObject *
datarows_skip(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &view, &pos))
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len, rows = 0;
    if (pos < 0)
        pos = 0;
    while (pos + 5 <= n && b[pos] == 'D') {
        uint32_t ln = get_be32(b + pos + 1);
        if (ln < 4 || (Py_ssize_t)ln > n - pos - 1)
            break;
        pos += 1 + (Py_ssize_t)ln;
        rows++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nn", pos, rows);
}

static PyObject *
datarows_rewrite(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    PyObject *actions_obj, *callback, *feeds = Py_None;
    if (!PyArg_ParseTuple(args, "y*nOO|O", &view, &pos, &actions_obj, &callback, &feeds))
        return NULL;
    action_t *acts = NULL;
    Py_ssize_t nacts = 0;
    Py_ssize_t *counts = NULL;
    outbuf_t ob = {NULL, 0, 0};
    PyObject *result = NULL, *countlist = NULL;
    int changed = 0;
    Py_ssize_t rows = 0;

    if (parse_actions(actions_obj, &acts, &nacts) < 0)
        goto done;
    counts = PyMem_Calloc(nacts ? (size_t)nacts : 1, sizeof(Py_ssize_t));
    if (counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len;
    if (pos < 0)
        pos = 0;
    if (ob_reserve(&ob, n - pos > 0 ? n - pos : 64) < 0)
        goto done;

    const unsigned char *body;
    Py_ssize_t blen;
    int ncols, at;
    while ((at = row_at(b, n, pos, &body, &blen, &ncols)) == 1) {
        Py_ssize_t start = ob.len;
        /* type, length (patched below), column count */
        if (ob_reserve(&ob, 7) < 0)
            goto done;
        ob.p[ob.len] = 'D';
        ob.len += 5;
        memcpy(ob.p + ob.len, body, 2);
        ob.len += 2;
        Py_ssize_t p = 2;
        for (int col = 0; col < ncols; col++) {
            int32_t vlen;
            if (value_at(body, blen, &p, &vlen) < 0)
                goto done;
            const unsigned char *v = body + p;
            if (vlen > 0)
                p += vlen;
            const action_t *a = col < nacts ? &acts[col] : NULL;
            if (vlen < 0 || a == NULL || a->code == A_PASS) {
                if (ob_be32(&ob, vlen) < 0 || (vlen > 0 && ob_put(&ob, v, vlen) < 0))
                    goto done;
                continue;
            }
            Py_ssize_t cps = 0;
            int code = a->code;
            if (code == A_PARTIAL && !utf8_valid(v, vlen, &cps))
                code = A_CALL; /* the Python path decodes it as the plan does */
            if (code == A_NULL) {
                counts[col]++;
                changed = 1;
                if (ob_be32(&ob, -1) < 0)
                    goto done;
            }
            else if (code == A_CONST) {
                counts[col]++;
                if (a->text_len != vlen || memcmp(a->text, v, (size_t)vlen) != 0)
                    changed = 1;
                if (ob_be32(&ob, (int32_t)a->text_len) < 0 || ob_put(&ob, a->text, a->text_len) < 0)
                    goto done;
            }
            else if (code == A_PARTIAL) {
                counts[col]++;
                Py_ssize_t at = ob.len;
                if (ob_be32(&ob, 0) < 0
                    || partial(&ob, v, vlen, cps, a->keep_last, a->domain) < 0)
                    goto done;
                Py_ssize_t mlen = ob.len - at - 4;
                if (mlen > INT32_MAX) {
                    PyErr_SetString(PyExc_ValueError, "masked value too long");
                    goto done;
                }
                put_be32((unsigned char *)ob.p + at, (uint32_t)mlen);
                if (mlen != vlen || memcmp(ob.p + at + 4, v, (size_t)vlen) != 0)
                    changed = 1;
            }
            else if (code == A_FEED) {
                PyObject *feed = feeds == Py_None ? NULL : PySequence_GetItem(feeds, col);
                if (feed == NULL) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "no feed for a column");
                    goto done;
                }
                if (!PyList_Check(feed) || rows >= PyList_GET_SIZE(feed)) {
                    Py_DECREF(feed);
                    PyErr_SetString(PyExc_ValueError, "a feed is a list with a value per row");
                    goto done;
                }
                PyObject *r = PyList_GET_ITEM(feed, rows);
                int rc = 0;
                if (r == Py_None) {
                    changed = 1;
                    rc = ob_be32(&ob, -1) < 0;
                }
                else if (PyBytes_Check(r) && PyBytes_GET_SIZE(r) <= INT32_MAX) {
                    Py_ssize_t rl = PyBytes_GET_SIZE(r);
                    if (rl != vlen || memcmp(PyBytes_AS_STRING(r), v, (size_t)vlen) != 0)
                        changed = 1;
                    rc = ob_be32(&ob, (int32_t)rl) < 0 || ob_put(&ob, PyBytes_AS_STRING(r), rl) < 0;
                }
                else {
                    PyErr_SetString(PyExc_TypeError, "a feed holds bytes or None");
                    rc = 1;
                }
                Py_DECREF(feed);
                if (rc)
                    goto done;
            }
            else { /* A_CALL */
                PyObject *val = PyBytes_FromStringAndSize((const char *)v, vlen);
                if (val == NULL)
                    goto done;
                PyObject *r = PyObject_CallFunction(callback, "iO", col, val);
                if (r == NULL) {
                    Py_DECREF(val);
                    goto done;
                }
                int rc = 0;
                if (r == val) {
                    rc = ob_be32(&ob, vlen) < 0 || ob_put(&ob, v, vlen) < 0;
                }
                else if (r == Py_None) {
                    changed = 1;
                    rc = ob_be32(&ob, -1) < 0;
                }
                else if (PyBytes_Check(r)) {
                    Py_ssize_t rl = PyBytes_GET_SIZE(r);
                    if (rl > INT32_MAX) {
                        PyErr_SetString(PyExc_ValueError, "masked value too long");
                        rc = 1;
                    }
                    else {
                        if (rl != vlen || memcmp(PyBytes_AS_STRING(r), v, (size_t)vlen) != 0)
                            changed = 1;
                        rc = ob_be32(&ob, (int32_t)rl) < 0
                             || ob_put(&ob, PyBytes_AS_STRING(r), rl) < 0;
                    }
                }
                else {
                    PyErr_SetString(PyExc_TypeError, "the callback returns bytes or None");
                    rc = 1;
                }
                Py_DECREF(r);
                Py_DECREF(val);
                if (rc)
                    goto done;
            }
        }
        if (p != blen) {
            PyErr_SetString(PyExc_ValueError, "DataRow longer than its columns");
            goto done;
        }
        Py_ssize_t mlen = ob.len - start - 1;
        if (mlen > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "DataRow too long");
            goto done;
        }
        put_be32((unsigned char *)ob.p + start + 1, (uint32_t)mlen);
        pos += 5 + blen;
        rows++;
    }
    if (at < 0)
        goto done;
    countlist = PyList_New(nacts);
    if (countlist == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < nacts; i++) {
        PyObject *c = PyLong_FromSsize_t(counts[i]);
        if (c == NULL)
            goto done;
        PyList_SET_ITEM(countlist, i, c);
    }
    result = Py_BuildValue("y#nnOO", ob.p ? ob.p : "", ob.len, pos, rows, countlist,
                           changed ? Py_True : Py_False);
done:
    Py_XDECREF(countlist);
    PyMem_Free(ob.p);
    PyMem_Free(counts);
    PyMem_Free(acts);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
datarows_gather(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    PyObject *cols_obj;
    if (!PyArg_ParseTuple(args, "y*nO", &view, &pos, &cols_obj))
        return NULL;
    PyObject *result = NULL, *lists = NULL;
    PyObject *cols = PySequence_Fast(cols_obj, "cols must be a sequence");
    Py_ssize_t ncols = 0, rows = 0;
    long *want = NULL;
    if (cols == NULL)
        goto done;
    ncols = PySequence_Fast_GET_SIZE(cols);
    want = PyMem_Calloc(ncols ? (size_t)ncols : 1, sizeof(long));
    lists = PyList_New(ncols);
    if (want == NULL || lists == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < ncols; k++) {
        want[k] = PyLong_AsLong(PySequence_Fast_GET_ITEM(cols, k));
        if (want[k] == -1 && PyErr_Occurred())
            goto done;
        if (want[k] < 0) {
            PyErr_SetString(PyExc_ValueError, "a column index is >= 0");
            goto done;
        }
        PyObject *l = PyList_New(0);
        if (l == NULL)
            goto done;
        PyList_SET_ITEM(lists, k, l);
    }
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len;
    if (pos < 0)
        pos = 0;
    const unsigned char *body;
    Py_ssize_t blen;
    int count, at;
    while ((at = row_at(b, n, pos, &body, &blen, &count)) == 1) {
        /* Offsets of this row's values: walk once, then pick the wanted columns. */
        Py_ssize_t p = 2;
        for (Py_ssize_t k = 0; k < ncols; k++) {
            if (PyList_Append(PyList_GET_ITEM(lists, k), Py_None) < 0)
                goto done;
        }
        for (int col = 0; col < count; col++) {
            int32_t vlen;
            if (value_at(body, blen, &p, &vlen) < 0)
                goto done;
            if (vlen >= 0) {
                for (Py_ssize_t k = 0; k < ncols; k++) {
                    if (want[k] != col)
                        continue;
                    PyObject *v = PyBytes_FromStringAndSize((const char *)body + p, vlen);
                    if (v == NULL)
                        goto done;
                    /* replaces the None appended above (the list owns the new ref) */
                    if (PyList_SetItem(PyList_GET_ITEM(lists, k), rows, v) < 0)
                        goto done;
                }
                p += vlen;
            }
        }
        if (p != blen) {
            PyErr_SetString(PyExc_ValueError, "DataRow longer than its columns");
            goto done;
        }
        pos += 5 + blen;
        rows++;
    }
    if (at < 0)
        goto done;
    result = Py_BuildValue("nnO", pos, rows, lists);
done:
    Py_XDECREF(lists);
    Py_XDECREF(cols);
    PyMem_Free(want);
    PyBuffer_Release(&view);
    return result;
}

/* The server walk of a relayed session's read (``frames.walk_reference`` is its
 * definition): the frame headers from ``pos`` (where the next message begins, possibly
 * past the end of this read), the DataRow and CopyData messages counted, each complete
 * CommandComplete's tag (up to its NUL, at most MAX_TAG bytes) gathered, and where the
 * body of an incomplete last CommandComplete begins (-1 when there is none). A length
 * below 4 counts as 4: the backend is trusted to frame, but no length moves backwards. */
#define MAX_TAG 256

static PyObject *
datarows_walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    if (!PyArg_ParseTuple(args, "y*n", &view, &pos))
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t n = view.len, rows = 0, open_at = -1;
    PyObject *tags = NULL, *result = NULL;
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "walk: pos is >= 0");
        goto done;
    }
    while (pos <= n - 5) {
        unsigned char t = b[pos];
        uint32_t ln = get_be32(b + pos + 1); /* unsigned, as the header walk reads it */
        Py_ssize_t len = ln >= 4 ? (Py_ssize_t)ln : 4;
        if (t == 'D' || t == 'd') {
            rows++;
        } else if (t == 'C') {
            if (len <= n - pos - 1) {
                Py_ssize_t span = len - 4 < MAX_TAG ? len - 4 : MAX_TAG;
                const unsigned char *body = b + pos + 5;
                const unsigned char *nul = memchr(body, 0, (size_t)span);
                PyObject *tag = PyBytes_FromStringAndSize(
                    (const char *)body, nul ? (Py_ssize_t)(nul - body) : span);
                if (tag == NULL)
                    goto done;
                if (tags == NULL && (tags = PyList_New(0)) == NULL) {
                    Py_DECREF(tag);
                    goto done;
                }
                int err = PyList_Append(tags, tag);
                Py_DECREF(tag);
                if (err < 0)
                    goto done;
            } else {
                open_at = pos + 5;
            }
        }
        pos += 1 + len;
    }
    if (tags == NULL)
        result = Py_BuildValue("nn()n", pos, rows, open_at);
    else
        result = Py_BuildValue("nnNn", pos, rows, PyList_AsTuple(tags), open_at);
done:
    Py_XDECREF(tags);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", datarows_walk, METH_VARARGS,
     "walk(buf, pos) -> (end, rows, tags, open_at): a relayed read's frame headers."},
    {"gather", datarows_gather, METH_VARARGS,
     "gather(buf, pos, cols) -> (end, rows, values): the run's values of some columns."},
    {"skip", datarows_skip, METH_VARARGS,
     "skip(buf, pos) -> (end, rows): the run of complete DataRows at pos."},
    {"rewrite", datarows_rewrite, METH_VARARGS,
     "rewrite(buf, pos, actions, callback[, feeds]) -> (out, end, rows, counts, changed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledgergate.wire.pg._datarows",
    "DataRow runs walked and rewritten in C (see _datarows.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__datarows(void)
{
    PyObject *mod = PyModule_Create(&module);
    if (mod != NULL && PyModule_AddIntConstant(mod, "MAX_TAG", MAX_TAG) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}

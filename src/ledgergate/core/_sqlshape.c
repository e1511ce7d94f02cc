/* The shape of a simple-protocol statement, for ledgergate's redaction cache.
 *
 * shape(text) -> str | None. Statements that differ only in their numeric constants
 * share one redaction (core/sqltext.py says why that holds). This is the character pass
 * that decides whether a text may be looked up by its shape and builds the key: None for
 * text that is not ASCII, is longer than MAX_SHAPED, or holds a quote of either kind,
 * '$', a backslash, '--', '/ *', or a run of digits (not preceded by a word character)
 * followed by a letter other than 'e'/'E' or by '_'; otherwise the text with each such
 * run of digits replaced by one '$'. It is the regular-expression definition in
 * sqltext.py (SHAPE_REFERENCE), which the tests hold it to, in one pass without
 * allocating more than the result. It does not parse SQL: the redaction itself is
 * PostgreSQL's parser's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_SHAPED 8192

static int
is_word(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_';
}

static PyObject *
sqlshape_shape(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "shape() takes a str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(arg) || PyUnicode_GET_LENGTH(arg) > MAX_SHAPED)
        Py_RETURN_NONE;
    const unsigned char *s = (const unsigned char *)PyUnicode_DATA(arg);
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    char buf[MAX_SHAPED];
    Py_ssize_t o = 0;
    int prev_word = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '\'': case '"': case '$': case '\\':
            Py_RETURN_NONE;
        case '-':
            if (i + 1 < n && s[i + 1] == '-')
                Py_RETURN_NONE;
            break;
        case '/':
            if (i + 1 < n && s[i + 1] == '*')
                Py_RETURN_NONE;
            break;
        default:
            break;
        }
        if (c >= '0' && c <= '9' && !prev_word) {
            Py_ssize_t j = i;
            while (j < n && s[j] >= '0' && s[j] <= '9')
                j++;
            if (j < n) {
                unsigned char f = s[j];
                if (f == '_' || (((f >= 'a' && f <= 'z') || (f >= 'A' && f <= 'Z')) &&
                                 f != 'e' && f != 'E'))
                    Py_RETURN_NONE;
            }
            buf[o++] = '$';
            i = j - 1;
            prev_word = 1;
            continue;
        }
        buf[o++] = (char)c;
        prev_word = is_word(c);
    }
    return PyUnicode_DecodeASCII(buf, o, NULL);
}

static PyMethodDef methods[] = {
    {"shape", sqlshape_shape, METH_O,
     "shape(text) -> str | None: the redaction-cache key of a simple-protocol statement."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledgergate.core._sqlshape",
    "The shape of a statement for the redaction cache (see _sqlshape.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__sqlshape(void)
{
    return PyModule_Create(&module);
}

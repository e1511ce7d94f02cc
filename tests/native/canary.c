/*
 * A module with two planted bugs, built the way tests/native/sanitized.py builds the
 * project's native modules, so the tests show that the sanitized runs catch them: a
 * read one byte past a heap buffer (AddressSanitizer) and a signed overflow (UBSan).
 * Test material only: never part of ledgergate.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *
read_past(PyObject *self, PyObject *arg)
{
    char *copy;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &copy, &n) < 0)
        return NULL;
    char *heap = malloc((size_t)n);
    if (heap == NULL)
        return PyErr_NoMemory();
    memcpy(heap, copy, (size_t)n);
    volatile char last = heap[n]; /* one past the end */
    free(heap);
    return PyLong_FromLong(last);
}

static PyObject *
add_one(PyObject *self, PyObject *arg)
{
    volatile int v = (int)PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(v + 1); /* overflows at INT_MAX */
}

static PyMethodDef methods[] = {
    {"read_past", read_past, METH_O, NULL},
    {"add_one", add_one, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_canary", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__canary(void)
{
    return PyModule_Create(&module);
}

/* recordcodec: the two costly steps of the Python capture path (mapped, Debezium and schema
 * registry topics), in C. Each is an accelerator with a reference in Python: whatever it does
 * not handle exactly as the reference would, it refuses (an exception), and the caller runs
 * the reference instead (daemon/changelog/segment.py record_datum, daemon/sources/fastjson.py).
 *
 * encode_record(record) -> bytes
 *     The Avro binary of one change-log record (schemas/changelog_record.avsc), as fastavro's
 *     schemaless writer gives it. Field order and types are RECORD_FIELDS; Python checks them
 *     against the schema file at import and does not use this module when they differ.
 *
 * loads(value, vector_paths, raw_paths=()) -> object
 *     orjson.loads(value), read by yyjson, except that the array at each of vector_paths (a
 *     tuple of key tuples), when it is a non-empty array of numbers within float32's range,
 *     becomes the bytes of its float32 little-endian values: what the contract makes of it,
 *     without a Python float per value (any other array stays a list); and the value at each
 *     of raw_paths becomes the bytes of its JSON text, minified: a Debezium envelope's Connect
 *     schema, the same in every message, is then a dictionary key, not a tree to build.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "yyjson/yyjson.h"

/* -- Avro writing ---------------------------------------------------------------------------- */
typedef struct { char *p; size_t len, cap; } Buf;

static int room(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->len + extra) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put_long(Buf *b, int64_t v) {
    if (room(b, 10)) return -1;
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char *q = (unsigned char *)b->p + b->len;
    while (n > 0x7F) { *q++ = (unsigned char)((n & 0x7F) | 0x80); n >>= 7; }
    *q++ = (unsigned char)n;
    b->len = (size_t)((char *)q - b->p);
    return 0;
}

static int put_raw(Buf *b, const char *s, size_t n) {
    if (put_long(b, (int64_t)n) || room(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static int put_byte(Buf *b, unsigned char c) {
    if (room(b, 1)) return -1;
    b->p[b->len++] = (char)c;
    return 0;
}

static int refuse(const char *field, const char *why) {
    PyErr_Format(PyExc_TypeError, "%s: %s", field, why);
    return -1;
}

static int w_long(Buf *b, PyObject *v, const char *field) {
    if (!v || !PyLong_Check(v) || PyBool_Check(v)) return refuse(field, "not an int");
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    return put_long(b, x);
}

static int w_str(Buf *b, PyObject *v, const char *field) {
    if (!v || !PyUnicode_CheckExact(v)) return refuse(field, "not a str");
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    if (!s) return -1;
    return put_raw(b, s, (size_t)n);
}

static int w_bytes(Buf *b, PyObject *v, const char *field) {
    if (!v || !PyBytes_CheckExact(v)) return refuse(field, "not bytes");
    return put_raw(b, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
}

typedef int (*Writer)(Buf *, PyObject *, const char *);

static int w_opt(Buf *b, PyObject *v, const char *field, Writer w) {  /* ["null", T] */
    if (!v || v == Py_None) return put_byte(b, 0);
    if (put_byte(b, 2)) return -1;
    return w(b, v, field);
}

/* An Avro array of a list's items, each written by `item`: one block of them (its count
 * first, none when empty), then the end block. */
static int w_array(Buf *b, PyObject *v, const char *field, Writer item) {
    if (!PyList_CheckExact(v)) return refuse(field, "not a list");
    Py_ssize_t n = PyList_GET_SIZE(v);
    if (n && put_long(b, n)) return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (item(b, PyList_GET_ITEM(v, i), field)) return -1;
    return put_byte(b, 0);
}

static int w_acl(Buf *b, PyObject *v, const char *field) {
    return w_array(b, v, field, w_str);
}

static PyObject *s_name, *s_version, *s_key, *s_value;

static int w_model(Buf *b, PyObject *v, const char *field) {
    if (!PyDict_CheckExact(v) || PyDict_GET_SIZE(v) > 2) return refuse(field, "not {name, version}");
    if (w_str(b, PyDict_GetItemWithError(v, s_name), field)) return -1;
    return w_opt(b, PyDict_GetItemWithError(v, s_version), field, w_str);
}

/* A Kafka header, {key: str, value: bytes | None}: an item of `headers` (fastavro takes a
 * missing value as its default, null; so does this). */
static int w_header(Buf *b, PyObject *v, const char *field) {
    if (!PyDict_CheckExact(v) || PyDict_GET_SIZE(v) > 2) return refuse(field, "not {key, value}");
    PyObject *value = PyDict_GetItemWithError(v, s_value);
    if (!value && PyErr_Occurred()) return -1;
    if (PyDict_GET_SIZE(v) == 2 && !value) return refuse(field, "not {key, value}");
    if (w_str(b, PyDict_GetItemWithError(v, s_key), field)) return -1;
    return w_opt(b, value, field, w_bytes);
}

static int w_headers(Buf *b, PyObject *v, const char *field) {
    return w_array(b, v, field, w_header);
}

enum { T_LONG, T_OPT_BYTES, T_STR, T_OPT_STR, T_OPT_INT, T_BOOL, T_OPT_ACL, T_OPT_MODEL,
       T_OPT_LONG, T_OPT_HEADERS, T_BOOL_FALSE };

typedef struct { const char *name; int type; const char *avro; } Field;

/* schemas/changelog_record.avsc, in order; `avro` is the type as Python's check spells it */
static const Field FIELDS[] = {
    {"offset", T_LONG, "long"},
    {"timestamp", T_LONG, "long"},
    {"key", T_OPT_BYTES, "null|bytes"},
    {"op", T_STR, "string"},
    {"collection", T_STR, "string"},
    {"tenant", T_STR, "string"},
    {"id", T_OPT_STR, "null|string"},
    {"dimension", T_OPT_INT, "null|int"},
    {"vector", T_OPT_BYTES, "null|bytes"},
    {"sparse_indices", T_OPT_BYTES, "null|bytes"},
    {"sparse_values", T_OPT_BYTES, "null|bytes"},
    {"document", T_OPT_STR, "null|string"},
    {"document_is_json", T_BOOL, "boolean"},
    {"metadata", T_OPT_STR, "null|string"},
    {"acl", T_OPT_ACL, "null|array<string>"},
    {"embedding_model", T_OPT_MODEL, "null|EmbeddingModel{name:string,version:null|string}"},
    {"source", T_OPT_STR, "null|string"},
    {"alias", T_OPT_STR, "null|string"},
    {"schema", T_OPT_STR, "null|string"},
    {"settings", T_OPT_STR, "null|string"},
    {"event_id", T_OPT_STR, "null|string"},
    {"event_time", T_OPT_STR, "null|string"},
    {"extra", T_OPT_STR, "null|string"},
    {"producer_timestamp", T_OPT_LONG, "null|long"},
    {"headers", T_OPT_HEADERS, "null|array<Header{key:string,value:null|bytes}>"},
    {"headers_truncated", T_BOOL_FALSE, "boolean"},
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])
static PyObject *field_keys[N_FIELDS];

static int w_int32(Buf *b, PyObject *v, const char *field) {
    if (!PyLong_Check(v) || PyBool_Check(v)) return refuse(field, "not an int");
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (x < INT32_MIN || x > INT32_MAX) return refuse(field, "beyond int");
    return put_long(b, x);
}

static PyObject *encode_record(PyObject *self, PyObject *rec) {
    if (!PyDict_CheckExact(rec)) {
        PyErr_SetString(PyExc_TypeError, "a record is a dict");
        return NULL;
    }
    Buf b = {0};
    for (size_t i = 0; i < N_FIELDS; i++) {
        const char *name = FIELDS[i].name;
        PyObject *v = PyDict_GetItemWithError(rec, field_keys[i]);
        if (!v && PyErr_Occurred()) goto fail;
        int r;
        switch (FIELDS[i].type) {
            case T_LONG: r = w_long(&b, v, name); break;
            case T_STR: r = w_str(&b, v, name); break;
            case T_OPT_BYTES: r = w_opt(&b, v, name, w_bytes); break;
            case T_OPT_STR: r = w_opt(&b, v, name, w_str); break;
            case T_OPT_INT: r = w_opt(&b, v, name, w_int32); break;
            case T_OPT_LONG: r = w_opt(&b, v, name, w_long); break;
            case T_OPT_ACL: r = w_opt(&b, v, name, w_acl); break;
            case T_OPT_MODEL: r = w_opt(&b, v, name, w_model); break;
            case T_OPT_HEADERS: r = w_opt(&b, v, name, w_headers); break;
            case T_BOOL_FALSE:  /* missing: its default, false */
                if (!v) { r = put_byte(&b, 0); break; }
                /* fall through */
            case T_BOOL:
                if (v != Py_True && v != Py_False) { r = refuse(name, "not a bool"); break; }
                r = put_byte(&b, v == Py_True);
                break;
            default: r = refuse(name, "unknown type");
        }
        if (r) goto fail;
    }
    PyObject *out = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
    PyMem_Free(b.p);
    return out;
fail:
    PyMem_Free(b.p);
    return NULL;
}

/* -- JSON reading ------------------------------------------------------------------------------ */
#define MAX_TARGETS 8
typedef struct { yyjson_val *at[MAX_TARGETS]; PyObject *bytes[MAX_TARGETS]; int n; } Targets;

static PyObject *to_py(yyjson_val *v, int depth, const Targets *t);

static PyObject *num_to_py(yyjson_val *v) {
    switch (yyjson_get_subtype(v)) {
        case YYJSON_SUBTYPE_UINT: return PyLong_FromUnsignedLongLong(yyjson_get_uint(v));
        case YYJSON_SUBTYPE_SINT: return PyLong_FromLongLong(yyjson_get_sint(v));
        default: return PyFloat_FromDouble(yyjson_get_real(v));
    }
}

static PyObject *to_py(yyjson_val *v, int depth, const Targets *t) {
    for (int i = 0; i < t->n; i++)
        if (t->at[i] == v) return Py_NewRef(t->bytes[i]);  /* a vector, already float32 */
    if (depth > 500) {  /* orjson's own limit is far lower; let it speak */
        PyErr_SetString(PyExc_ValueError, "too deep");
        return NULL;
    }
    switch (yyjson_get_type(v)) {
        case YYJSON_TYPE_NULL: Py_RETURN_NONE;
        case YYJSON_TYPE_BOOL: return PyBool_FromLong(yyjson_get_bool(v));
        case YYJSON_TYPE_NUM: return num_to_py(v);
        case YYJSON_TYPE_STR:
            return PyUnicode_DecodeUTF8(yyjson_get_str(v), (Py_ssize_t)yyjson_get_len(v),
                                        "strict");
        case YYJSON_TYPE_ARR: {
            PyObject *list = PyList_New((Py_ssize_t)yyjson_arr_size(v));
            if (!list) return NULL;
            yyjson_arr_iter it = yyjson_arr_iter_with(v);
            yyjson_val *x;
            Py_ssize_t i = 0;
            while ((x = yyjson_arr_iter_next(&it))) {
                PyObject *item = to_py(x, depth + 1, t);
                if (!item) { Py_DECREF(list); return NULL; }
                PyList_SET_ITEM(list, i++, item);
            }
            return list;
        }
        case YYJSON_TYPE_OBJ: {
            PyObject *dict = PyDict_New();
            if (!dict) return NULL;
            yyjson_obj_iter it = yyjson_obj_iter_with(v);
            yyjson_val *k;
            while ((k = yyjson_obj_iter_next(&it))) {
                PyObject *key = to_py(k, depth + 1, t);
                PyObject *val = key ? to_py(yyjson_obj_iter_get_val(k), depth + 1, t) : NULL;
                if (!val || PyDict_SetItem(dict, key, val)) {  /* a repeated key: the last */
                    Py_XDECREF(key);
                    Py_XDECREF(val);
                    Py_DECREF(dict);
                    return NULL;
                }
                Py_DECREF(key);
                Py_DECREF(val);
            }
            return dict;
        }
        default:
            PyErr_SetString(PyExc_ValueError, "unexpected JSON value");
            return NULL;
    }
}

/* The float32 bytes of an array of numbers within float32's range; NULL without an error when
 * the array is anything else (the contract's checks decide it, from the list). */
static PyObject *f32_bytes(yyjson_val *arr) {
    size_t n = yyjson_arr_size(arr);
    if (!n) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * 4));
    if (!out) return NULL;
    char *q = PyBytes_AS_STRING(out);
    yyjson_arr_iter it = yyjson_arr_iter_with(arr);
    yyjson_val *x;
    while ((x = yyjson_arr_iter_next(&it))) {
        double d;
        if (!yyjson_is_num(x)) { Py_DECREF(out); return NULL; }  /* a bool is not either */
        switch (yyjson_get_subtype(x)) {
            case YYJSON_SUBTYPE_UINT: d = (double)yyjson_get_uint(x); break;
            case YYJSON_SUBTYPE_SINT: d = (double)yyjson_get_sint(x); break;
            default: d = yyjson_get_real(x);
        }
        if (!(d <= FLT_MAX && d >= -FLT_MAX)) { Py_DECREF(out); return NULL; }
        float f = (float)d;
        memcpy(q, &f, 4);  /* little-endian hosts only: see module init */
        q += 4;
    }
    return out;
}

/* The values at ``paths`` (the last of repeated keys, as a dict keeps it) given as bytes:
 * arrays that are vectors as their float32 values (``raw`` 0), any value as its JSON text,
 * minified (``raw`` 1). */
static int find_targets(yyjson_val *root, PyObject *paths, Targets *t, int raw) {
    Py_ssize_t np = PyTuple_GET_SIZE(paths);
    for (Py_ssize_t i = 0; i < np && t->n < MAX_TARGETS; i++) {
        PyObject *path = PyTuple_GET_ITEM(paths, i);
        if (!PyTuple_Check(path)) continue;
        yyjson_val *v = root;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(path) && v; j++) {
            PyObject *key = PyTuple_GET_ITEM(path, j);
            Py_ssize_t kn;
            const char *ks = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &kn) : NULL;
            if (!ks) { PyErr_Clear(); v = NULL; break; }
            if (!yyjson_is_obj(v)) { v = NULL; break; }
            yyjson_val *found = NULL, *k;
            yyjson_obj_iter it = yyjson_obj_iter_with(v);
            while ((k = yyjson_obj_iter_next(&it)))
                if (yyjson_get_len(k) == (size_t)kn && memcmp(yyjson_get_str(k), ks, kn) == 0)
                    found = yyjson_obj_iter_get_val(k);
            v = found;
        }
        if (!v || PyTuple_GET_SIZE(path) == 0) continue;
        PyObject *bytes = NULL;
        if (raw) {
            size_t n;
            char *text = yyjson_val_write(v, YYJSON_WRITE_NOFLAG, &n);
            if (!text) { PyErr_NoMemory(); return -1; }
            bytes = PyBytes_FromStringAndSize(text, (Py_ssize_t)n);
            free(text);
        } else if (yyjson_is_arr(v)) {
            bytes = f32_bytes(v);
        }
        if (!bytes) {
            if (PyErr_Occurred()) return -1;
            continue;
        }
        t->at[t->n] = v;
        t->bytes[t->n++] = bytes;
    }
    return 0;
}

static PyObject *loads(PyObject *self, PyObject *args) {
    Py_buffer value;
    PyObject *paths, *raw_paths = NULL;
    if (!PyArg_ParseTuple(args, "y*O!|O!", &value, &PyTuple_Type, &paths, &PyTuple_Type,
                          &raw_paths))
        return NULL;
    yyjson_read_err err;
    yyjson_doc *doc = yyjson_read_opts(value.buf, (size_t)value.len, YYJSON_READ_NOFLAG, NULL,
                                       &err);
    PyBuffer_Release(&value);
    if (!doc) {
        PyErr_Format(PyExc_ValueError, "not JSON: %s at %zu", err.msg, err.pos);
        return NULL;
    }
    yyjson_val *root = yyjson_doc_get_root(doc);
    Targets t = {.n = 0};
    int bad = find_targets(root, paths, &t, 0)
              || (raw_paths && find_targets(root, raw_paths, &t, 1));
    PyObject *obj = bad ? NULL : to_py(root, 0, &t);
    for (int i = 0; i < t.n; i++) Py_DECREF(t.bytes[i]);
    yyjson_doc_free(doc);
    return obj;
}

static PyObject *f32_finite(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE)) return NULL;
    const unsigned char *p = b.buf;
    int ok = b.len % 4 == 0;
    for (Py_ssize_t i = 0; ok && i + 4 <= b.len; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);  /* little-endian: the exponent is bits 23-30 */
        if ((w & 0x7F800000u) == 0x7F800000u) ok = 0;  /* all ones: infinity or NaN */
    }
    PyBuffer_Release(&b);
    return PyBool_FromLong(ok);
}

/* -- module ------------------------------------------------------------------------------------ */
static PyObject *record_fields(void) {
    PyObject *t = PyTuple_New((Py_ssize_t)N_FIELDS);
    if (!t) return NULL;
    for (size_t i = 0; i < N_FIELDS; i++) {
        PyObject *pair = Py_BuildValue("(ss)", FIELDS[i].name, FIELDS[i].avro);
        if (!pair) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, pair);
    }
    return t;
}

static PyMethodDef methods[] = {
    {"encode_record", encode_record, METH_O,
     "The Avro binary of one change-log record (TypeError: use fastavro)."},
    {"f32_finite", f32_finite, METH_O,
     "True when every float32 (little-endian) of the buffer is finite."},
    {"loads", loads, METH_VARARGS,
     "orjson.loads, with the arrays at the given paths as float32 bytes and the values at the "
     "raw paths as JSON text (ValueError: use orjson)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "recordcodec", NULL, -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_recordcodec(void) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "recordcodec writes float32 as little-endian");
        return NULL;
    }
    s_name = PyUnicode_InternFromString("name");
    s_version = PyUnicode_InternFromString("version");
    s_key = PyUnicode_InternFromString("key");
    s_value = PyUnicode_InternFromString("value");
    if (!s_name || !s_version || !s_key || !s_value) return NULL;
    for (size_t i = 0; i < N_FIELDS; i++) {
        field_keys[i] = PyUnicode_InternFromString(FIELDS[i].name);
        if (!field_keys[i]) return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *fields = record_fields();
    if (!fields || PyModule_AddObject(m, "RECORD_FIELDS", fields)) {
        Py_XDECREF(fields);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

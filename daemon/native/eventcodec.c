/* eventcodec: capture's fast path, from Kafka messages to change-log records.
 *
 * encode_batch() turns a batch of confluent-kafka Messages into change-log record datums
 * (the Avro binary encoding of schemas/changelog_record.avsc, as fastavro's schemaless writer
 * gives it), with the GIL released while it parses. It handles the events that make up almost
 * every stream: valid `upsert` and `delete` events, in JSON (read by yyjson) or in Avro
 * (schemas/change_event.avsc, walked byte by byte). It refuses the common bad ones itself, with
 * the parser's reason and detail (refusals.h: oversize, an unknown op, a missing or mistyped
 * field, a bad or non-finite vector, a wrong dimension). Anything else it does not judge:
 * control ops, the other bad events, sparse vectors, real numbers inside metadata, messages
 * carrying a Kafka error. Those come back as None and capture gives them to the Python parser
 * (daemon/events.py), which is the reference: for every event the fast path accepts, its
 * datum must equal what the Python parser and fastavro make of it, byte for byte, and for
 * every event it refuses, its reason and detail must be the parser's
 * (tests/unit/test_eventcodec.py holds it to both).
 *
 * A message's Kafka headers end its datum (the record's last fields, headers and
 * headers_truncated): null and false when it has none, else as the headers_tail callable it is
 * given encodes them (daemon/kafka_headers.py encode_tail, where the bounds are).
 *
 * Only a `collection.put` or `collection.drop` can change what the next events are checked
 * against (the collection's dimension), so the pass stops right after an event that is, or
 * may be, one of those: capture parses it, then calls again from the next message.
 *
 * One translation unit in parts, included in order: codec_text.h (buffers, Avro primitives,
 * UTF-8, JSON text as orjson writes it), the Event gathered here, refusals.h (bad events in the
 * parser's words), codec_record.h (the datum), codec_json.h and codec_avro.h (the two input
 * formats); the batch, codec_results.h (the answers: per message, or in runs for
 * encode_runs), and the module follow.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "yyjson/yyjson.h"

#define OK 0
#define DEFER 1    /* not for the fast path: the Python parser decides */
#define BARRIER 2  /* DEFER, and the pass stops after this event */
#define REJECT 3   /* a bad event, judged as the parser would: Ctx.reason and Ctx.detail */
#define NOT_AN_OP 4
#define NOMEM (-1)
#define TRY(x) do { int r_ = (x); if (r_) return r_; } while (0)

enum { OP_UPSERT = 0, OP_DELETE = 1 };
#define MAX_EXTRA 32
#define MAX_DEPTH 64
#define MAX_DIMS 256

#include "codec_text.h"

/* -- one event, gathered before it is written ------------------------------------------------ */
typedef struct { const char *p; size_t n; int present; } Span;

typedef struct {
    int op;
    Span collection, tenant, id, event_id, event_time;
    size_t dim;                  /* 0: no vector */
    const char *vec_raw;         /* Avro: little-endian float32 */
    yyjson_val *vec_json;        /* JSON: array of numbers */
    Span document;               /* text */
    yyjson_val *document_json;   /* JSON document (object or array) */
    yyjson_val *metadata_json;
    Span metadata_text;          /* Avro: JSON text, parsed at write time */
    yyjson_val *acl_json;
    const unsigned char *acl_avro, *acl_avro_end;  /* Avro: the array's bytes; NULL: null */
    size_t acl_avro_count;
    int model_present;
    Span model_name, model_version;
    yyjson_val *source_json;
    int source_avro;
    Span source_uri, source_sha;
    int64_t source_chunk;
    int source_chunk_present;
    yyjson_val *extra_keys[MAX_EXTRA], *extra_vals[MAX_EXTRA];
    int n_extra;
} Event;

typedef struct { const char *name; size_t len; long dim; } KnownDim;

typedef struct {
    KnownDim dims[MAX_DIMS];
    int n_dims;
    int dims_incomplete;         /* more collections than MAX_DIMS: check nothing fast */
    Buf tmp;
    yyjson_alc *alc;
    int reason;                  /* REJECT: the parser's reason (refusals.h) */
    Buf detail;                  /* REJECT: the parser's detail text */
} Ctx;

#include "refusals.h"

/* The collection's known dimension: 0 when not known yet (captured with its own), -1 when
 * the codec cannot tell. */
static long known_dim(Ctx *cx, const Span *coll) {
    if (cx->dims_incomplete) return -1;
    for (int i = 0; i < cx->n_dims; i++)
        if (cx->dims[i].len == coll->n && memcmp(cx->dims[i].name, coll->p, coll->n) == 0)
            return cx->dims[i].dim > 0 ? cx->dims[i].dim : -1;
    return 0;
}

/* Whether a value the codec cannot read may still be a collection op to the parser (which
 * changes what the next events are checked against, so the pass must stop after it). Its op
 * would be "collection.put" or "collection.drop": the text is in the value as such (UTF-8 has
 * one way to write it), or, in JSON, behind an escape. Garbage (a truncated value, a stray
 * format) is neither, and does not stop the pass. */
static int may_be_collection_op(const char *value, size_t len, int json) {
    if (json && memchr(value, '\\', len)) return 1;
    return memmem(value, len, "collection.", 11) != NULL;
}

static int op_of(const char *s, size_t n, int *op) {
    static const char *const control[] = {"alias.put", "alias.drop", "tenant.put", "tenant.drop"};
    if (n == 6 && memcmp(s, "upsert", 6) == 0) { *op = OP_UPSERT; return OK; }
    if (n == 6 && memcmp(s, "delete", 6) == 0) { *op = OP_DELETE; return OK; }
    if (n == 14 && (memcmp(s, "collection.put", 14) == 0)) return BARRIER;
    if (n == 15 && (memcmp(s, "collection.drop", 15) == 0)) return BARRIER;
    for (size_t i = 0; i < sizeof control / sizeof *control; i++)
        if (strlen(control[i]) == n && memcmp(control[i], s, n) == 0) return DEFER;
    return NOT_AN_OP;  /* the parser's unknown_op */
}

#include "codec_record.h"
#include "codec_json.h"
#include "codec_avro.h"

/* -- the batch ------------------------------------------------------------------------------ */
typedef struct {
    PyObject *topic, *value, *key;
    PyObject *tail;  /* the record's last fields (headers, headers_truncated), encoded; NULL:
                      * no headers (null, false) */
    long long partition, offset, timestamp;
    int avro;
    int deferred;  /* DEFER/BARRIER; REJECT, with the reason in op, the detail in names; or OK
                    * with the datum below */
    int op;
    size_t out_off, out_len, names_off, coll_n, id_n;
} Item;

static PyObject *s_error, *s_topic, *s_partition, *s_offset, *s_timestamp, *s_value, *s_key,
    *s_headers, *s_set_headers;
static PyObject *s_upsert, *s_delete;
static PyObject *s_reasons[N_REASONS];

static int encode_one(Ctx *cx, Item *it, Buf *out, Buf *names) {
    Event e;
    memset(&e, 0, sizeof e);
    const char *value = PyBytes_AS_STRING(it->value);
    size_t len = (size_t)PyBytes_GET_SIZE(it->value);
    const char *key = NULL;
    size_t key_n = 0;
    if (it->key != Py_None) {
        key = PyBytes_AS_STRING(it->key);
        key_n = (size_t)PyBytes_GET_SIZE(it->key);
    }
    yyjson_doc *doc = NULL;
    int r;
    if (it->avro) {
        r = gather_avro(cx, value, len, &e);
    } else {
        doc = yyjson_read_opts((char *)value, len, YYJSON_READ_NOFLAG, cx->alc, NULL);
        if (!doc)  /* unparseable here: only the Python parser may judge */
            return may_be_collection_op(value, len, 1) ? BARRIER : DEFER;
        r = gather_json(cx, yyjson_doc_get_root(doc), &e);
    }
    if (r == REJECT) {  /* the parser's detail, kept beside the names */
        it->op = cx->reason;
        it->names_off = names->len;
        it->id_n = cx->detail.len;
        r = put_raw(names, cx->detail.p, cx->detail.len);
        if (doc) yyjson_doc_free(doc);
        return r == OK ? REJECT : r;
    }
    size_t mark = out->len;
    if (r == OK) r = write_record(cx, out, &e, it->offset, it->timestamp, key, key_n, it->key != Py_None);
    if (r == OK)  /* headers, headers_truncated */
        r = it->tail ? put_raw(out, PyBytes_AS_STRING(it->tail), (size_t)PyBytes_GET_SIZE(it->tail))
                     : put_raw(out, "\0\0", 2);
    if (r == OK) {
        it->out_off = mark;
        it->out_len = out->len - mark;
        it->op = e.op;
        it->names_off = names->len;
        it->coll_n = e.collection.n;
        it->id_n = e.id.n;
        r = put_raw(names, e.collection.p, e.collection.n);
        if (r == OK) r = put_raw(names, e.id.p, e.id.n);
    } else {
        out->len = mark;
    }
    if (doc) yyjson_doc_free(doc);
    return r;
}

static long long call_ll(PyObject *msg, PyObject *name, int *bad) {
    PyObject *v = PyObject_CallMethodNoArgs(msg, name);
    if (!v) { *bad = 1; return 0; }
    long long x = v == Py_None ? -1 : PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred()) *bad = 1;
    return x;
}

/* Kafka headers as daemon/kafka_headers.py keeps them (MAX_HEADERS, MAX_HEADER_BYTES; the
 * module checks HEADER_LIMITS against those at import). */
#define MAX_HEADERS 16
#define MAX_HEADER_BYTES 4096

/* The encoded headers and headers_truncated of h, a list of (str, bytes | None), bounded as
 * kafka_headers._kept bounds them (whole headers that fit, in order); NULL, no error set, for
 * anything else (bytes keys, str values, a key that does not encode: the reference decides). */
static PyObject *encode_headers(PyObject *h) {
    if (!PyList_CheckExact(h)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(h), kept[MAX_HEADERS];
    int nk = 0, truncated = 0;
    size_t used = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(h, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2) return NULL;
        PyObject *k = PyTuple_GET_ITEM(t, 0), *v = PyTuple_GET_ITEM(t, 1);
        if (!k || !v || !PyUnicode_CheckExact(k) || (v != Py_None && !PyBytes_CheckExact(v)))
            return NULL;
        Py_ssize_t kn;
        if (!PyUnicode_AsUTF8AndSize(k, &kn)) { PyErr_Clear(); return NULL; }
        size_t size = (size_t)kn + (v == Py_None ? 0 : (size_t)PyBytes_GET_SIZE(v));
        if (nk == MAX_HEADERS || used + size > MAX_HEADER_BYTES) { truncated = 1; continue; }
        kept[nk++] = i;
        used += size;
    }
    Buf b = {0};
    int r = put_byte(&b, 2);
    if (nk && r == OK) r = put_long(&b, nk);
    for (int j = 0; j < nk && r == OK; j++) {
        PyObject *t = PyList_GET_ITEM(h, kept[j]), *v = PyTuple_GET_ITEM(t, 1);
        Py_ssize_t kn;
        const char *ks = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 0), &kn);
        r = put_str(&b, ks, (size_t)kn);
        if (r == OK)
            r = put_opt_str(&b, v == Py_None ? NULL : PyBytes_AS_STRING(v),
                            v == Py_None ? 0 : (size_t)PyBytes_GET_SIZE(v), v != Py_None);
    }
    if (r == OK) r = put_byte(&b, 0);
    if (r == OK) r = put_byte(&b, (unsigned char)truncated);
    PyObject *out = r == OK ? PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len) : NULL;
    free(b.p);
    if (!out) PyErr_Clear();  /* out of memory here: the reference tries */
    return out;
}

/* The end of the message's datum, its headers and headers_truncated: NULL (null, false) for a
 * message without headers, else headers_tail(headers). confluent-kafka raises on a header key
 * that is not UTF-8 and keeps a half-built list that a later headers() would hand out: such a
 * message's headers become `unreadable` (set_headers), and its tail headers_tail(unreadable). */
static int read_tail(PyObject *msg, PyObject *headers_tail, PyObject *unreadable, Item *it) {
    PyObject *h = PyObject_CallMethodNoArgs(msg, s_headers);
    if (!h) {
        PyErr_Clear();
        PyObject *r = PyObject_CallMethodOneArg(msg, s_set_headers, unreadable);
        if (!r) return -1;
        Py_DECREF(r);
        h = Py_NewRef(unreadable);
    }
    if (h == Py_None) {
        Py_DECREF(h);
        return 0;
    }
    it->tail = encode_headers(h);
    if (!it->tail) it->tail = PyObject_CallOneArg(headers_tail, h);
    Py_DECREF(h);
    if (!it->tail) return -1;
    if (!PyBytes_Check(it->tail)) {
        PyErr_SetString(PyExc_TypeError, "headers_tail must return bytes");
        return -1;
    }
    return 0;
}

/* Phase 1 (GIL held): what each message is. 0: fine, 1: not for the fast path, 2: over
 * max_bytes (the parser's oversize), -1: error. */
static int read_message(PyObject *msg, PyObject *formats, Py_ssize_t max_bytes,
                        PyObject *headers_tail, PyObject *unreadable, Item *it) {
    PyObject *err = PyObject_CallMethodNoArgs(msg, s_error);
    if (!err) return -1;
    int has_err = err != Py_None;
    Py_DECREF(err);
    if (has_err) return 1;
    it->topic = PyObject_CallMethodNoArgs(msg, s_topic);
    if (!it->topic) return -1;
    PyObject *fmt = PyDict_GetItemWithError(formats, it->topic);
    if (!fmt) return PyErr_Occurred() ? -1 : 1;
    it->avro = PyObject_IsTrue(fmt);
    it->value = PyObject_CallMethodNoArgs(msg, s_value);
    if (!it->value) return -1;
    if (!PyBytes_Check(it->value)) return 1;
    it->key = PyObject_CallMethodNoArgs(msg, s_key);
    if (!it->key) return -1;
    if (it->key != Py_None && !PyBytes_Check(it->key)) return 1;
    int bad = 0;
    it->partition = call_ll(msg, s_partition, &bad);
    it->offset = call_ll(msg, s_offset, &bad);
    if (bad) return -1;
    PyObject *ts = PyObject_CallMethodNoArgs(msg, s_timestamp);
    if (!ts) return -1;
    if (!PyTuple_Check(ts) || PyTuple_GET_SIZE(ts) != 2) { Py_DECREF(ts); return 1; }
    it->timestamp = PyLong_AsLongLong(PyTuple_GET_ITEM(ts, 1));
    Py_DECREF(ts);
    if (it->timestamp == -1 && PyErr_Occurred()) return -1;
    if (PyBytes_GET_SIZE(it->value) > max_bytes) return 2;
    return read_tail(msg, headers_tail, unreadable, it);
}

static int load_dims(Ctx *cx, PyObject *dims) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(dims, &pos, &k, &v)) {
        if (cx->n_dims == MAX_DIMS) { cx->dims_incomplete = 1; return 0; }
        Py_ssize_t n;
        const char *s = PyUnicode_Check(k) ? PyUnicode_AsUTF8AndSize(k, &n) : NULL;
        if (!s) { PyErr_Clear(); cx->dims_incomplete = 1; return 0; }
        long d = PyLong_AsLong(v);
        if (d == -1 && PyErr_Occurred()) { PyErr_Clear(); cx->dims_incomplete = 1; return 0; }
        cx->dims[cx->n_dims].name = s;  /* the dict's keys outlive the call: see encode_batch */
        cx->dims[cx->n_dims].len = (size_t)n;
        cx->dims[cx->n_dims++].dim = d;
    }
    return 0;
}

#include "codec_results.h"

static PyObject *encode(PyObject *args, int runs) {
    PyObject *msgs, *formats, *dims, *headers_tail, *unreadable;
    Py_ssize_t start, max_bytes;
    if (!PyArg_ParseTuple(args, runs ? "O!nO!O!nOO:encode_runs" : "O!nO!O!nOO:encode_batch",
                          &PyList_Type, &msgs, &start,
                          &PyDict_Type, &formats, &PyDict_Type, &dims, &max_bytes,
                          &headers_tail, &unreadable))
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(msgs);
    if (start < 0 || start > total) {
        PyErr_SetString(PyExc_IndexError, "start is outside the batch");
        return NULL;
    }
    Py_ssize_t n = total - start;
    Item *items = calloc((size_t)(n ? n : 1), sizeof(Item));
    Ctx *cx = calloc(1, sizeof(Ctx));
    PyObject *dims_copy = PyDict_Copy(dims);  /* keeps the names alive without the GIL */
    Buf out = {0}, names = {0};
    PyObject *result = NULL, *list = NULL;
    if (!items || !cx || !dims_copy) { PyErr_NoMemory(); goto done; }
    load_dims(cx, dims_copy);
    cx->alc = yyjson_alc_dyn_new();
    if (!cx->alc) { PyErr_NoMemory(); goto done; }
    Py_ssize_t stop = n;
    int nomem = 0;
    /* Messages are read (GIL held) in chunks that double, then encoded (GIL released) until
     * a barrier: a pass that stops early has read at most twice what it covered. Reading the
     * whole rest of the batch each time made a stream with many barriers (bad events are
     * barriers when no op can be read) quadratic in the batch size. */
    for (Py_ssize_t lo = 0, chunk = 16; lo < stop && !nomem; lo += chunk, chunk *= 2) {
        Py_ssize_t hi = lo + chunk < n ? lo + chunk : n;
        for (Py_ssize_t i = lo; i < hi; i++) {
            Item *it = &items[i];
            int r = read_message(PyList_GET_ITEM(msgs, start + i), formats, max_bytes,
                                 headers_tail, unreadable, it);
            if (r < 0) goto done;
            it->deferred = r == 1 ? DEFER : OK;
            if (r == 2) {  /* the parser checks the size first */
                it->deferred = REJECT;
                it->op = R_OVERSIZE;
                it->names_off = names.len;
                if (refuse_oversize(&names, PyBytes_GET_SIZE(it->value), max_bytes)) {
                    PyErr_NoMemory();
                    goto done;
                }
                it->id_n = names.len - it->names_off;
            }
        }
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = lo; i < hi; i++) {
            if (items[i].deferred) continue;
            int r = encode_one(cx, &items[i], &out, &names);
            if (r == NOMEM) { nomem = 1; break; }
            items[i].deferred = r;
            if (r == BARRIER) { stop = i + 1; break; }
        }
        Py_END_ALLOW_THREADS
    }
    if (nomem) { PyErr_NoMemory(); goto done; }
    list = runs ? build_runs(items, start, stop, &out, &names)
                : build_events(items, stop, &out, &names);
    if (!list) goto done;
    result = Py_BuildValue("(On)", list, start + stop);
done:
    Py_XDECREF(list);
    if (items) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_XDECREF(items[i].topic);
            Py_XDECREF(items[i].value);
            Py_XDECREF(items[i].key);
            Py_XDECREF(items[i].tail);
        }
    }
    if (cx) {
        if (cx->alc) yyjson_alc_dyn_free(cx->alc);
        free(cx->tmp.p);
        free(cx->detail.p);
    }
    Py_XDECREF(dims_copy);
    free(items);
    free(cx);
    free(out.p);
    free(names.p);
    return result;
}

static PyObject *encode_batch(PyObject *self, PyObject *args) {
    (void)self;
    return encode(args, 0);
}

static PyObject *encode_runs(PyObject *self, PyObject *args) {
    (void)self;
    return encode(args, 1);
}

static PyMethodDef methods[] = {
    {"encode_batch", encode_batch, METH_VARARGS,
     "encode_batch(messages, start, formats, dimensions, max_event_bytes, headers_tail, "
     "unreadable)"
     " -> (results, stop)\n\n"
     "Change-log datums for messages[start:stop]: per message a tuple (topic, partition, "
     "offset, timestamp, key, value_size, datum, op, collection, id); for a bad event it "
     "refuses, the 8 fields of its QuarantineEntry (topic, partition, offset, timestamp, "
     "reason, detail, key, value), as the Python parser would give them; or None where the "
     "Python parser must decide. ``formats`` maps topic -> True for Avro, False for JSON; "
     "``dimensions`` maps collection -> dimension. Each datum ends with the record's headers and "
     "headers_truncated: null and false for a message without headers, else "
     "``headers_tail(message.headers())`` (bytes); headers the client cannot decode are "
     "replaced by ``unreadable`` (set_headers) and encoded as it. Call again from ``stop``."},
    {"encode_runs", encode_runs, METH_VARARGS,
     "encode_runs(messages, start, formats, dimensions, max_event_bytes, headers_tail, "
     "unreadable) -> (items, stop)\n\n"
     "What encode_batch says of messages[start:stop], in order, with its encoded messages "
     "gathered in runs: consecutive messages of one topic, partition and collection, offsets "
     "rising, each run one tuple (first, topic, partition, collection, offsets, timestamps, "
     "value_sizes, datums, ops, ids) of parallel lists, ``first`` the index of its first "
     "message in ``messages``. A refused message is its 8-tuple, a message the Python parser "
     "must decide its index (int). Capture adds a run to a segment with per-run, not "
     "per-event, Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "eventcodec", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_eventcodec(void) {
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "eventcodec needs a little-endian host");
        return NULL;
    }
    s_error = PyUnicode_InternFromString("error");
    s_topic = PyUnicode_InternFromString("topic");
    s_partition = PyUnicode_InternFromString("partition");
    s_offset = PyUnicode_InternFromString("offset");
    s_timestamp = PyUnicode_InternFromString("timestamp");
    s_value = PyUnicode_InternFromString("value");
    s_key = PyUnicode_InternFromString("key");
    s_headers = PyUnicode_InternFromString("headers");
    s_set_headers = PyUnicode_InternFromString("set_headers");
    s_upsert = PyUnicode_InternFromString("upsert");
    s_delete = PyUnicode_InternFromString("delete");
    if (!s_error || !s_topic || !s_partition || !s_offset || !s_timestamp || !s_value ||
        !s_key || !s_headers || !s_set_headers || !s_upsert || !s_delete)
        return NULL;
    for (int i = 0; i < N_REASONS; i++)
        if (!(s_reasons[i] = PyUnicode_InternFromString(REASON_NAMES[i]))) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *limits = Py_BuildValue("(ii)", MAX_HEADERS, MAX_HEADER_BYTES);
    if (!limits || PyModule_AddObject(m, "HEADER_LIMITS", limits) < 0) {
        Py_XDECREF(limits);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

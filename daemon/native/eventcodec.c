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
 * Only a `collection.put` or `collection.drop` can change what the next events are checked
 * against (the collection's dimension), so the pass stops right after an event that is, or
 * may be, one of those: capture parses it, then calls again from the next message.
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

/* -- growable byte buffer ------------------------------------------------------------------ */
typedef struct { char *p; size_t len, cap; } Buf;

static int buf_room(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return OK;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return NOMEM;
    b->p = p;
    b->cap = cap;
    return OK;
}

static inline int put_raw(Buf *b, const void *s, size_t n) {
    TRY(buf_room(b, n));
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return OK;
}

static inline int put_byte(Buf *b, unsigned char c) {
    TRY(buf_room(b, 1));
    b->p[b->len++] = (char)c;
    return OK;
}

static inline int put_long(Buf *b, int64_t v) {  /* Avro long: zigzag varint */
    TRY(buf_room(b, 10));
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    unsigned char *q = (unsigned char *)b->p + b->len;
    while (n > 0x7F) {
        *q++ = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *q++ = (unsigned char)n;
    b->len = (size_t)((char *)q - b->p);
    return OK;
}

static inline int put_str(Buf *b, const char *s, size_t n) {  /* Avro string or bytes */
    TRY(put_long(b, (int64_t)n));
    return put_raw(b, s, n);
}

static inline int put_opt_str(Buf *b, const char *s, size_t n, int present) {
    if (!present) return put_byte(b, 0);
    TRY(put_byte(b, 2));  /* union branch 1, zigzag */
    return put_str(b, s, n);
}

/* -- UTF-8: as strict as Python's decoder (no surrogates, no overlongs) --------------------- */
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0)) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80) return 0;
            if ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] >= 0x90)) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* -- JSON text as orjson.dumps writes it (compact; reals are left to Python) ---------------- */
static int jw_str(Buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (!utf8_ok((const unsigned char *)s, n)) return DEFER;
    TRY(buf_room(b, n * 6 + 2));
    char *q = b->p + b->len;
    *q++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *q++ = (char)c; continue; }
        *q++ = '\\';
        switch (c) {
            case '"': *q++ = '"'; break;
            case '\\': *q++ = '\\'; break;
            case '\b': *q++ = 'b'; break;
            case '\t': *q++ = 't'; break;
            case '\n': *q++ = 'n'; break;
            case '\f': *q++ = 'f'; break;
            case '\r': *q++ = 'r'; break;
            default:
                *q++ = 'u'; *q++ = '0'; *q++ = '0';
                *q++ = hex[c >> 4]; *q++ = hex[c & 15];
        }
    }
    *q++ = '"';
    b->len = (size_t)(q - b->p);
    return OK;
}

static int jw_val(Buf *b, yyjson_val *v, int depth);

static int same_key(yyjson_val *a, yyjson_val *b) {
    return yyjson_get_len(a) == yyjson_get_len(b) &&
           memcmp(yyjson_get_str(a), yyjson_get_str(b), yyjson_get_len(a)) == 0;
}

/* Duplicate keys: orjson keeps the last value where the first key was; leave that to it. */
static int obj_has_duplicates(yyjson_val *obj) {
    size_t n = yyjson_obj_size(obj);
    if (n < 2) return 0;
    if (n > 64) return 1;
    yyjson_val *keys[64];
    size_t i = 0;
    yyjson_obj_iter it = yyjson_obj_iter_with(obj);
    yyjson_val *k;
    while ((k = yyjson_obj_iter_next(&it))) keys[i++] = k;
    for (size_t x = 0; x < n; x++)
        for (size_t y = x + 1; y < n; y++)
            if (same_key(keys[x], keys[y])) return 1;
    return 0;
}

static int jw_obj(Buf *b, yyjson_val *obj, int depth) {
    if (obj_has_duplicates(obj)) return DEFER;
    TRY(put_byte(b, '{'));
    yyjson_obj_iter it = yyjson_obj_iter_with(obj);
    yyjson_val *k;
    int first = 1;
    while ((k = yyjson_obj_iter_next(&it))) {
        if (!first) TRY(put_byte(b, ','));
        first = 0;
        TRY(jw_str(b, yyjson_get_str(k), yyjson_get_len(k)));
        TRY(put_byte(b, ':'));
        TRY(jw_val(b, yyjson_obj_iter_get_val(k), depth + 1));
    }
    return put_byte(b, '}');
}

static int jw_val(Buf *b, yyjson_val *v, int depth) {
    char num[24];
    if (depth > MAX_DEPTH) return DEFER;
    switch (yyjson_get_type(v)) {
        case YYJSON_TYPE_NULL: return put_raw(b, "null", 4);
        case YYJSON_TYPE_BOOL: return yyjson_get_bool(v) ? put_raw(b, "true", 4)
                                                         : put_raw(b, "false", 5);
        case YYJSON_TYPE_STR: return jw_str(b, yyjson_get_str(v), yyjson_get_len(v));
        case YYJSON_TYPE_NUM:
            switch (yyjson_get_subtype(v)) {
                case YYJSON_SUBTYPE_UINT:
                    return put_raw(b, num, (size_t)snprintf(num, sizeof num, "%llu",
                                                            (unsigned long long)yyjson_get_uint(v)));
                case YYJSON_SUBTYPE_SINT:
                    return put_raw(b, num, (size_t)snprintf(num, sizeof num, "%lld",
                                                            (long long)yyjson_get_sint(v)));
                default: return DEFER;  /* a real: its shortest form is orjson's to write */
            }
        case YYJSON_TYPE_ARR: {
            TRY(put_byte(b, '['));
            yyjson_arr_iter it = yyjson_arr_iter_with(v);
            yyjson_val *x;
            int first = 1;
            while ((x = yyjson_arr_iter_next(&it))) {
                if (!first) TRY(put_byte(b, ','));
                first = 0;
                TRY(jw_val(b, x, depth + 1));
            }
            return put_byte(b, ']');
        }
        case YYJSON_TYPE_OBJ: return jw_obj(b, v, depth);
        default: return DEFER;
    }
}

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

/* -- writing the change-log record ---------------------------------------------------------- */
static int write_json_vector(Buf *out, yyjson_val *arr, size_t dim) {
    TRY(put_long(out, (int64_t)dim * 4));
    TRY(buf_room(out, dim * 4));
    char *q = out->p + out->len;
    yyjson_arr_iter it = yyjson_arr_iter_with(arr);
    yyjson_val *x;
    while ((x = yyjson_arr_iter_next(&it))) {
        double d;
        switch (yyjson_get_subtype(x)) {  /* the type was checked when gathered */
            case YYJSON_SUBTYPE_UINT: d = (double)yyjson_get_uint(x); break;
            case YYJSON_SUBTYPE_SINT: d = (double)yyjson_get_sint(x); break;
            default: d = yyjson_get_real(x);
        }
        if (!(d <= FLT_MAX && d >= -FLT_MAX)) return DEFER;  /* also NaN */
        float f = (float)d;
        memcpy(q, &f, 4);  /* little-endian hosts only: see module init */
        q += 4;
    }
    out->len += dim * 4;
    return OK;
}

static int finite_f32(const char *p, size_t dim) {
    for (size_t i = 0; i < dim; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        if ((w & 0x7F800000u) == 0x7F800000u) return 0;  /* exponent all ones: inf or NaN */
    }
    return 1;
}

static int write_text_json(Ctx *cx, Buf *out, yyjson_val *v) {
    cx->tmp.len = 0;
    TRY(jw_val(&cx->tmp, v, 0));
    TRY(put_byte(out, 2));
    return put_str(out, cx->tmp.p, cx->tmp.len);
}

static int write_avro_acl(Buf *out, const Event *e);
static int write_avro_source(Ctx *cx, Buf *out, const Event *e);

static int write_record(Ctx *cx, Buf *out, const Event *e, int64_t offset, int64_t ts,
                        const char *key, size_t key_n, int has_key) {
    TRY(put_long(out, offset));
    TRY(put_long(out, ts));
    TRY(put_opt_str(out, key, key_n, has_key));
    TRY(e->op == OP_UPSERT ? put_str(out, "upsert", 6) : put_str(out, "delete", 6));
    TRY(put_str(out, e->collection.p, e->collection.n));
    TRY(put_str(out, e->tenant.p, e->tenant.present ? e->tenant.n : 0));
    TRY(put_opt_str(out, e->id.p, e->id.n, 1));
    if (e->dim) {  /* dimension, vector */
        TRY(put_byte(out, 2));
        TRY(put_long(out, (int64_t)e->dim));
        TRY(put_byte(out, 2));
        if (e->vec_raw) TRY(put_str(out, e->vec_raw, e->dim * 4));
        else TRY(write_json_vector(out, e->vec_json, e->dim));
    } else {
        TRY(put_raw(out, "\0\0", 2));
    }
    TRY(put_raw(out, "\0\0", 2));  /* sparse_indices, sparse_values */
    if (e->document_json) TRY(write_text_json(cx, out, e->document_json));
    else TRY(put_opt_str(out, e->document.p, e->document.n, e->document.present));
    TRY(put_byte(out, e->document_json ? 1 : 0));  /* document_is_json */
    if (e->metadata_json) {
        TRY(write_text_json(cx, out, e->metadata_json));
    } else if (e->metadata_text.present) {  /* Avro: JSON text, to be an object */
        yyjson_doc *doc = yyjson_read_opts((char *)e->metadata_text.p, e->metadata_text.n,
                                           YYJSON_READ_NOFLAG, cx->alc, NULL);
        if (!doc) return DEFER;
        yyjson_val *root = yyjson_doc_get_root(doc);
        int r = yyjson_is_obj(root) ? write_text_json(cx, out, root) : DEFER;
        yyjson_doc_free(doc);
        TRY(r);
    } else {
        TRY(put_byte(out, 0));
    }
    if (e->acl_json) {
        size_t n = yyjson_arr_size(e->acl_json);
        TRY(put_byte(out, 2));
        if (n) {
            TRY(put_long(out, (int64_t)n));
            yyjson_arr_iter it = yyjson_arr_iter_with(e->acl_json);
            yyjson_val *x;
            while ((x = yyjson_arr_iter_next(&it))) {
                if (!utf8_ok((const unsigned char *)yyjson_get_str(x), yyjson_get_len(x)))
                    return DEFER;
                TRY(put_str(out, yyjson_get_str(x), yyjson_get_len(x)));
            }
        }
        TRY(put_byte(out, 0));
    } else if (e->acl_avro) {
        TRY(put_byte(out, 2));
        TRY(write_avro_acl(out, e));
    } else {
        TRY(put_byte(out, 0));
    }
    if (e->model_present) {
        TRY(put_byte(out, 2));
        TRY(put_str(out, e->model_name.p, e->model_name.n));
        TRY(put_opt_str(out, e->model_version.p, e->model_version.n, e->model_version.present));
    } else {
        TRY(put_byte(out, 0));
    }
    if (e->source_json) TRY(write_text_json(cx, out, e->source_json));
    else if (e->source_avro) TRY(write_avro_source(cx, out, e));
    else TRY(put_byte(out, 0));
    TRY(put_raw(out, "\0\0\0", 3));  /* alias, schema, settings: not those of a record op */
    TRY(put_opt_str(out, e->event_id.p, e->event_id.n, e->event_id.present));
    TRY(put_opt_str(out, e->event_time.p, e->event_time.n, e->event_time.present));
    if (e->n_extra) {  /* fields outside the contract, as one JSON object */
        cx->tmp.len = 0;
        TRY(put_byte(&cx->tmp, '{'));
        for (int i = 0; i < e->n_extra; i++) {
            if (i) TRY(put_byte(&cx->tmp, ','));
            TRY(jw_str(&cx->tmp, yyjson_get_str(e->extra_keys[i]), yyjson_get_len(e->extra_keys[i])));
            TRY(put_byte(&cx->tmp, ':'));
            TRY(jw_val(&cx->tmp, e->extra_vals[i], 1));
        }
        TRY(put_byte(&cx->tmp, '}'));
        TRY(put_byte(out, 2));
        TRY(put_str(out, cx->tmp.p, cx->tmp.len));
    } else {
        TRY(put_byte(out, 0));
    }
    TRY(put_byte(out, 0));  /* producer_timestamp: capture's timeline sets it in Python */
    return OK;
}

/* -- JSON events ---------------------------------------------------------------------------- */
static int j_str(yyjson_val *v, Span *s, int nullable) {
    if (!v || yyjson_is_null(v)) {
        if (!nullable) return DEFER;
        s->present = 0;
        return OK;
    }
    if (!yyjson_is_str(v)) return DEFER;
    s->p = yyjson_get_str(v);
    s->n = yyjson_get_len(v);
    s->present = 1;
    return utf8_ok((const unsigned char *)s->p, s->n) ? OK : DEFER;
}

/* A string field as the parser reads it (_required_str with ``op``, the event's; else
 * _optional_str): OK (absent or null: not present), DEFER, or REJECT in the parser's words. */
static int j_field(Ctx *cx, yyjson_val *v, Span *s, const char *name, const Span *op) {
    if (!v || yyjson_is_null(v) || (op && yyjson_is_str(v) && !yyjson_get_len(v))) {
        if (op) return refuse_missing(cx, op, name);
        s->present = 0;
        return OK;
    }
    if (!yyjson_is_str(v)) return refuse_type(cx, name, "a string", v);
    return j_str(v, s, 0);
}

enum {
    F_OP, F_COLLECTION, F_TENANT, F_ID, F_VECTOR, F_SPARSE, F_DOCUMENT, F_METADATA, F_ACL,
    F_MODEL, F_SOURCE, F_ALIAS, F_SCHEMA, F_SETTINGS, F_EVENT_ID, F_EVENT_TIME, N_FIELDS
};
static const char *const FIELD_NAMES[N_FIELDS] = {
    "op", "collection", "tenant", "id", "vector", "sparse", "document", "metadata", "acl",
    "embedding_model", "source", "alias", "schema", "settings", "event_id", "event_time",
};

static int field_of(const char *s, size_t n) {
    for (int f = 0; f < N_FIELDS; f++)
        if (strlen(FIELD_NAMES[f]) == n && memcmp(FIELD_NAMES[f], s, n) == 0) return f;
    return -1;
}

static int gather_json(Ctx *cx, yyjson_val *root, Event *e) {
    yyjson_val *f[N_FIELDS] = {0};
    if (!yyjson_is_obj(root)) return DEFER;
    yyjson_obj_iter it = yyjson_obj_iter_with(root);
    yyjson_val *k;
    while ((k = yyjson_obj_iter_next(&it))) {
        int which = field_of(yyjson_get_str(k), yyjson_get_len(k));
        if (which >= 0) {
            /* A duplicate key: orjson keeps the last, which may be a collection op's. Only
             * the parser may say, and what it learns must hold for the next events. */
            if (f[which]) return BARRIER;
            f[which] = yyjson_obj_iter_get_val(k);
        } else {
            if (e->n_extra == MAX_EXTRA) return BARRIER;  /* the op may be further on */
            for (int i = 0; i < e->n_extra; i++)
                if (same_key(e->extra_keys[i], k)) return BARRIER;
            e->extra_keys[e->n_extra] = k;
            e->extra_vals[e->n_extra++] = yyjson_obj_iter_get_val(k);
        }
    }
    /* The parser's checks in its order (EventParser._to_record, then _fill_upsert), so the
     * first one an event fails is the parser's reason for it. */
    Span op;
    yyjson_val *opv = f[F_OP];
    if (!opv || !yyjson_is_str(opv)) {  /* not text: neither a collection op */
        char num[24];
        const char *lit = json_op_literal(opv, num);
        return lit ? refuse_op(cx, lit, NULL, 0) : DEFER;
    }
    TRY(j_str(opv, &op, 0));
    int r = op_of(op.p, op.n, &e->op);
    if (r == NOT_AN_OP) return refuse_op(cx, NULL, op.p, op.n);
    TRY(r);
    TRY(j_field(cx, f[F_COLLECTION], &e->collection, "collection", &op));
    TRY(j_field(cx, f[F_TENANT], &e->tenant, "tenant", NULL));
    yyjson_val *m = f[F_MODEL];
    if (m && !yyjson_is_null(m)) {
        static const char model[] = "embedding_model must be {name, version}";
        if (!yyjson_is_obj(m)) return refuse(cx, R_BAD_FIELD, model);
        if (obj_has_duplicates(m)) return DEFER;
        yyjson_val *name = yyjson_obj_getn(m, "name", 4);
        if (!name || !yyjson_is_str(name)) return refuse(cx, R_BAD_FIELD, model);
        TRY(j_str(name, &e->model_name, 0));
        TRY(j_str(yyjson_obj_getn(m, "version", 7), &e->model_version, 1));
        e->model_present = 1;
    }
    yyjson_val *src = f[F_SOURCE];
    if (src && !yyjson_is_null(src)) {
        if (!yyjson_is_obj(src)) return refuse_type(cx, "source", "a JSON object", src);
        if (!depth_ok(src, 0)) return DEFER;
        e->source_json = src;
    }
    TRY(j_field(cx, f[F_EVENT_ID], &e->event_id, "event_id", NULL));
    TRY(j_field(cx, f[F_EVENT_TIME], &e->event_time, "event_time", NULL));
    TRY(j_field(cx, f[F_ID], &e->id, "id", &op));
    if (e->op == OP_DELETE) return OK;
    yyjson_val *vec = f[F_VECTOR];
    if (vec && !yyjson_is_null(vec)) {
        if (yyjson_is_str(vec)) return DEFER;  /* base64 text: the Python parser decodes it */
        if (!yyjson_is_arr(vec))
            return refuse(cx, R_BAD_VECTOR, "vector must be a list of numbers or base64 float32");
        size_t dim = yyjson_arr_size(vec);
        long known = known_dim(cx, &e->collection);
        if (known < 0) return DEFER;
        if (known && (size_t)known != dim) return refuse_dimension(cx, dim, &e->collection, known);
        int beyond = 0;
        yyjson_arr_iter ai = yyjson_arr_iter_with(vec);
        yyjson_val *x;
        while ((x = yyjson_arr_iter_next(&ai))) {
            if (yyjson_is_bool(x)) return DEFER;  /* a number to the parser, not to the codec */
            if (!yyjson_is_num(x)) return refuse_element(cx, x);
            double d = yyjson_get_num(x);
            if (!(d <= FLT_MAX && d >= -FLT_MAX)) beyond = 1;
        }
        if (beyond) return refuse(cx, R_NON_FINITE, "vector holds a value beyond float32 range");
        if (!dim) return refuse(cx, R_BAD_VECTOR, "vector is empty");
        e->dim = dim;
        e->vec_json = vec;
    }
    if (f[F_SPARSE] && !yyjson_is_null(f[F_SPARSE])) return DEFER;
    yyjson_val *doc = f[F_DOCUMENT];
    if (doc && !yyjson_is_null(doc)) {
        if (yyjson_is_str(doc)) TRY(j_str(doc, &e->document, 0));
        else if (yyjson_is_obj(doc) || yyjson_is_arr(doc)) e->document_json = doc;
        else return DEFER;
    }
    yyjson_val *meta = f[F_METADATA];
    if (meta && !yyjson_is_null(meta)) {
        if (!yyjson_is_obj(meta)) return DEFER;
        e->metadata_json = meta;
    }
    yyjson_val *acl = f[F_ACL];
    if (acl && !yyjson_is_null(acl)) {
        if (!yyjson_is_arr(acl)) return DEFER;
        yyjson_arr_iter ai = yyjson_arr_iter_with(acl);
        yyjson_val *x;
        while ((x = yyjson_arr_iter_next(&ai)))
            if (!yyjson_is_str(x)) return DEFER;
        e->acl_json = acl;
    }
    return OK;
}

/* -- Avro events (schemas/change_event.avsc, field by field) -------------------------------- */
typedef struct { const unsigned char *p, *end; } Rd;

static int rd_long(Rd *r, int64_t *out) {
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (r->p >= r->end || shift > 63) return DEFER;
        unsigned char b = *r->p++;
        n |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
    }
    *out = (int64_t)((n >> 1) ^ (~(n & 1) + 1));
    return OK;
}

static int rd_bytes(Rd *r, Span *s) {
    int64_t n;
    TRY(rd_long(r, &n));
    if (n < 0 || n > r->end - r->p) return DEFER;
    s->p = (const char *)r->p;
    s->n = (size_t)n;
    s->present = 1;
    r->p += n;
    return OK;
}

static int rd_string(Rd *r, Span *s) {
    TRY(rd_bytes(r, s));
    return utf8_ok((const unsigned char *)s->p, s->n) ? OK : DEFER;
}

static int rd_branch(Rd *r, int *present) {  /* a ["null", T] union */
    int64_t b;
    TRY(rd_long(r, &b));
    if (b != 0 && b != 1) return DEFER;
    *present = (int)b;
    return OK;
}

static int rd_opt_string(Rd *r, Span *s) {
    int present;
    TRY(rd_branch(r, &present));
    if (!present) { s->present = 0; return OK; }
    return rd_string(r, s);
}

/* Walk an array<string> (blocks; a negative count has its byte size after it), checking its
 * strings; with ``out`` (a second walk), write them back as fastavro would (one block). */
static int avro_strings(Rd *r, Buf *out, size_t *count) {
    *count = 0;
    for (;;) {
        int64_t n, size;
        TRY(rd_long(r, &n));
        if (n == 0) break;
        if (n < 0) {
            if (n == INT64_MIN) return DEFER;
            TRY(rd_long(r, &size));
            n = -n;
        }
        for (int64_t i = 0; i < n; i++) {
            Span s;
            if (out) {
                TRY(rd_bytes(r, &s));
                TRY(put_str(out, s.p, s.n));
            } else {
                TRY(rd_string(r, &s));
            }
        }
        *count += (size_t)n;
    }
    return OK;
}

static int write_avro_acl(Buf *out, const Event *e) {
    Rd r = {e->acl_avro, e->acl_avro_end};  /* walked and checked when gathered */
    size_t count;
    if (e->acl_avro_count) {
        TRY(put_long(out, (int64_t)e->acl_avro_count));
        TRY(avro_strings(&r, out, &count));
    }
    return put_byte(out, 0);
}

static int write_avro_source(Ctx *cx, Buf *out, const Event *e) {
    Buf *t = &cx->tmp;
    char num[24];
    t->len = 0;
    int first = 1;
    TRY(put_byte(t, '{'));
    if (e->source_uri.present) {
        TRY(put_raw(t, "\"uri\":", 6));
        TRY(jw_str(t, e->source_uri.p, e->source_uri.n));
        first = 0;
    }
    if (e->source_chunk_present) {
        if (!first) TRY(put_byte(t, ','));
        TRY(put_raw(t, "\"chunk\":", 8));
        TRY(put_raw(t, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)e->source_chunk)));
        first = 0;
    }
    if (e->source_sha.present) {
        if (!first) TRY(put_byte(t, ','));
        TRY(put_raw(t, "\"content_sha256\":", 17));
        TRY(jw_str(t, e->source_sha.p, e->source_sha.n));
    }
    TRY(put_byte(t, '}'));
    TRY(put_byte(out, 2));
    return put_str(out, t->p, t->len);
}

static int gather_avro(Ctx *cx, const char *value, size_t len, Event *e) {
    Rd r = {(const unsigned char *)value, (const unsigned char *)value + len};
    Span op, skip;
    int present;
    /* fastavro reads the whole value before the parser checks anything: the parser's first
     * refusal (``bad``, in its order: op, collection, id, vector) stands only once the value
     * is read to its end. */
    int bad = OK;
    if (rd_string(&r, &op))  /* no readable op: only Python may judge */
        return may_be_collection_op(value, len, 0) ? BARRIER : DEFER;
    int r_op = op_of(op.p, op.n, &e->op);
    if (r_op == NOT_AN_OP) bad = refuse_op(cx, NULL, op.p, op.n);
    else TRY(r_op);
    if (bad == DEFER) return DEFER;
    TRY(rd_string(&r, &e->collection));
    if (!bad && !e->collection.n) bad = refuse_missing(cx, &op, "collection");
    TRY(rd_opt_string(&r, &e->tenant));
    TRY(rd_opt_string(&r, &e->id));
    if (!bad && (!e->id.present || !e->id.n)) bad = refuse_missing(cx, &op, "id");
    Span vec;
    TRY(rd_branch(&r, &present));
    if (present) {
        TRY(rd_bytes(&r, &vec));
        if (bad) {
            /* refused already: the vector is only read */
        } else if (e->op == OP_DELETE) {  /* not the parser's to check: the fast path's */
            if (vec.n == 0 || vec.n % 4 || !finite_f32(vec.p, vec.n / 4)) return DEFER;
        } else if (vec.n % 4) {
            bad = refuse_vector_bytes(cx, vec.n);
        } else if (vec.n == 0) {
            bad = refuse(cx, R_BAD_VECTOR, "vector is empty");
        } else if (!finite_f32(vec.p, vec.n / 4)) {
            bad = refuse(cx, R_NON_FINITE,
                         "vector holds NaN or infinity (or a value beyond float32)");
        } else {
            long known = known_dim(cx, &e->collection);
            if (known < 0) return DEFER;
            if (known && (size_t)known != vec.n / 4)
                bad = refuse_dimension(cx, vec.n / 4, &e->collection, known);
            e->dim = vec.n / 4;
            e->vec_raw = vec.p;
        }
        if (bad == DEFER) return DEFER;
    }
    TRY(rd_branch(&r, &present));  /* sparse */
    if (present) return DEFER;
    TRY(rd_opt_string(&r, &e->document));
    TRY(rd_opt_string(&r, &e->metadata_text));
    TRY(rd_branch(&r, &present));  /* acl */
    if (present) {
        e->acl_avro = r.p;
        TRY(avro_strings(&r, NULL, &e->acl_avro_count));
        e->acl_avro_end = r.p;
    }
    TRY(rd_branch(&r, &e->model_present));
    if (e->model_present) {
        TRY(rd_string(&r, &e->model_name));
        TRY(rd_opt_string(&r, &e->model_version));
    }
    TRY(rd_branch(&r, &e->source_avro));
    if (e->source_avro) {
        TRY(rd_opt_string(&r, &e->source_uri));
        TRY(rd_branch(&r, &e->source_chunk_present));
        if (e->source_chunk_present) TRY(rd_long(&r, &e->source_chunk));
        TRY(rd_opt_string(&r, &e->source_sha));
    }
    TRY(rd_opt_string(&r, &skip));  /* alias */
    TRY(rd_opt_string(&r, &skip));  /* schema */
    TRY(rd_opt_string(&r, &skip));  /* settings */
    TRY(rd_opt_string(&r, &e->event_id));
    TRY(rd_opt_string(&r, &e->event_time));
    if (r.p != r.end) return DEFER;  /* trailing bytes */
    if (bad) return bad;
    if (e->op == OP_DELETE) {  /* a delete keeps none of the record's content */
        e->document.present = 0;
        e->metadata_text.present = 0;
        e->acl_avro = NULL;
    }
    return OK;
}

/* -- the batch ------------------------------------------------------------------------------ */
typedef struct {
    PyObject *topic, *value, *key;
    long long partition, offset, timestamp;
    int avro;
    int deferred;  /* DEFER/BARRIER; REJECT, with the reason in op, the detail in names; or OK
                    * with the datum below */
    int op;
    size_t out_off, out_len, names_off, coll_n, id_n;
} Item;

static PyObject *s_error, *s_topic, *s_partition, *s_offset, *s_timestamp, *s_value, *s_key;
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

/* Phase 1 (GIL held): what each message is. 0: fine, 1: not for the fast path, 2: over
 * max_bytes (the parser's oversize), -1: error. */
static int read_message(PyObject *msg, PyObject *formats, Py_ssize_t max_bytes, Item *it) {
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
    return PyBytes_GET_SIZE(it->value) > max_bytes ? 2 : 0;
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

static PyObject *encode_batch(PyObject *self, PyObject *args) {
    PyObject *msgs, *formats, *dims;
    Py_ssize_t start, max_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!nO!O!n:encode_batch", &PyList_Type, &msgs, &start,
                          &PyDict_Type, &formats, &PyDict_Type, &dims, &max_bytes))
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
            int r = read_message(PyList_GET_ITEM(msgs, start + i), formats, max_bytes, it);
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
    list = PyList_New(stop);
    if (!list) goto done;
    PyObject *last_coll = NULL;
    const char *last_coll_p = NULL;
    size_t last_coll_n = 0;
    for (Py_ssize_t i = 0; i < stop; i++) {
        Item *it = &items[i];
        const char *cp = names.p + it->names_off;
        if (it->deferred == REJECT) {  /* QuarantineEntry's fields, in its order */
            PyObject *tup = PyTuple_New(8);
            if (!tup) goto done;
            PyList_SET_ITEM(list, i, tup);
            PyObject *fields[8] = {
                Py_NewRef(it->topic), PyLong_FromLongLong(it->partition),
                PyLong_FromLongLong(it->offset), PyLong_FromLongLong(it->timestamp),
                Py_NewRef(s_reasons[it->op]),
                PyUnicode_DecodeUTF8(cp, (Py_ssize_t)it->id_n, "strict"),
                Py_NewRef(it->key), Py_NewRef(it->value),
            };
            int failed = 0;
            for (int f = 0; f < 8; f++) {
                if (!fields[f]) failed = 1;
                PyTuple_SET_ITEM(tup, f, fields[f] ? fields[f] : Py_NewRef(Py_None));
            }
            if (failed) { Py_XDECREF(last_coll); goto done; }
            continue;
        }
        if (it->deferred) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(list, i, Py_None);
            continue;
        }
        if (!last_coll || last_coll_n != it->coll_n || memcmp(last_coll_p, cp, it->coll_n) != 0) {
            Py_XDECREF(last_coll);
            last_coll = PyUnicode_DecodeUTF8(cp, (Py_ssize_t)it->coll_n, "strict");
            if (!last_coll) goto done;
            last_coll_p = cp;
            last_coll_n = it->coll_n;
        }
        PyObject *tup = PyTuple_New(10);
        if (!tup) goto done;
        PyList_SET_ITEM(list, i, tup);  /* the list owns it: filled below, freed with it */
        PyObject *fields[10] = {
            Py_NewRef(it->topic), PyLong_FromLongLong(it->partition),
            PyLong_FromLongLong(it->offset), PyLong_FromLongLong(it->timestamp),
            Py_NewRef(it->key), PyLong_FromSsize_t(PyBytes_GET_SIZE(it->value)),
            PyBytes_FromStringAndSize(out.p + it->out_off, (Py_ssize_t)it->out_len),
            Py_NewRef(it->op == OP_UPSERT ? s_upsert : s_delete), Py_NewRef(last_coll),
            PyUnicode_DecodeUTF8(cp + it->coll_n, (Py_ssize_t)it->id_n, "strict"),
        };
        int failed = 0;
        for (int f = 0; f < 10; f++) {
            if (!fields[f]) failed = 1;
            PyTuple_SET_ITEM(tup, f, fields[f] ? fields[f] : Py_NewRef(Py_None));
        }
        if (failed) { Py_XDECREF(last_coll); goto done; }
    }
    Py_XDECREF(last_coll);
    result = Py_BuildValue("(On)", list, start + stop);
done:
    Py_XDECREF(list);
    if (items) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_XDECREF(items[i].topic);
            Py_XDECREF(items[i].value);
            Py_XDECREF(items[i].key);
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

static PyMethodDef methods[] = {
    {"encode_batch", encode_batch, METH_VARARGS,
     "encode_batch(messages, start, formats, dimensions, max_event_bytes) -> (results, stop)\n\n"
     "Change-log datums for messages[start:stop]: per message a tuple (topic, partition, "
     "offset, timestamp, key, value_size, datum, op, collection, id); for a bad event it "
     "refuses, the 8 fields of its QuarantineEntry (topic, partition, offset, timestamp, "
     "reason, detail, key, value), as the Python parser would give them; or None where the "
     "Python parser must decide. ``formats`` maps topic -> True for Avro, False for JSON; "
     "``dimensions`` maps collection -> dimension. Call again from ``stop``."},
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
    s_upsert = PyUnicode_InternFromString("upsert");
    s_delete = PyUnicode_InternFromString("delete");
    if (!s_error || !s_topic || !s_partition || !s_offset || !s_timestamp || !s_value ||
        !s_key || !s_upsert || !s_delete)
        return NULL;
    for (int i = 0; i < N_REASONS; i++)
        if (!(s_reasons[i] = PyUnicode_InternFromString(REASON_NAMES[i]))) return NULL;
    return PyModule_Create(&module);
}

/* refusals.h: the bad events the event codec judges itself, in the parser's own words.
 *
 * Included by eventcodec.c, after its Buf, Span and Ctx. For the common kinds of bad event the
 * codec gives the reason and the detail text daemon/events.py gives, byte for byte, so capture
 * keeps the event (raw bytes, coordinates, reason, detail) without parsing it a second time in
 * Python. It refuses an event only when every check the parser makes before the failing one is
 * a check the codec makes too, and passes: anything else, or a text it cannot write as Python
 * would (the repr of non-ASCII text, of a real number, of a list), stays DEFER, the parser's to
 * judge. tests/unit/test_eventcodec.py holds the two to the same reason and detail.
 */
#ifndef VECWAL_REFUSALS_H
#define VECWAL_REFUSALS_H

/* The parser's reasons (daemon/events.py), indexed by Ctx.reason. */
enum {
    R_OVERSIZE, R_UNKNOWN_OP, R_MISSING_FIELD, R_BAD_FIELD, R_BAD_VECTOR, R_NON_FINITE,
    R_WRONG_DIMENSION, N_REASONS
};
static const char *const REASON_NAMES[N_REASONS] = {
    "oversize", "unknown_op", "missing_field", "bad_field", "bad_vector", "non_finite",
    "wrong_dimension",
};

/* ', '.join(sorted(OPS)) */
static const char OPS_LISTED[] =
    "alias.drop, alias.put, collection.drop, collection.put, delete, tenant.drop, tenant.put, "
    "upsert";

static inline int put_cstr(Buf *b, const char *s) { return put_raw(b, s, strlen(s)); }

static int put_ll(Buf *b, long long v) {
    char num[24];
    return put_raw(b, num, (size_t)snprintf(num, sizeof num, "%lld", v));
}

/* Python's repr() of a str, for ASCII text; DEFER for any other (its repr keeps printable
 * non-ASCII characters, which only Unicode's tables can tell). */
static int put_repr(Buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    char q = (memchr(s, '\'', n) && !memchr(s, '"', n)) ? '"' : '\'';
    TRY(put_byte(b, (unsigned char)q));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) return DEFER;
        if (c == (unsigned char)q || c == '\\') {
            TRY(put_byte(b, '\\'));
            TRY(put_byte(b, c));
        } else if (c == '\t') {
            TRY(put_raw(b, "\\t", 2));
        } else if (c == '\n') {
            TRY(put_raw(b, "\\n", 2));
        } else if (c == '\r') {
            TRY(put_raw(b, "\\r", 2));
        } else if (c < 0x20 || c == 0x7F) {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            TRY(put_raw(b, esc, 4));
        } else {
            TRY(put_byte(b, c));
        }
    }
    return put_byte(b, (unsigned char)q);
}

/* type(value).__name__ of what orjson makes of a JSON value */
static const char *py_type_name(yyjson_val *v) {
    switch (yyjson_get_type(v)) {
        case YYJSON_TYPE_BOOL: return "bool";
        case YYJSON_TYPE_NUM: return yyjson_get_subtype(v) == YYJSON_SUBTYPE_REAL ? "float" : "int";
        case YYJSON_TYPE_STR: return "str";
        case YYJSON_TYPE_ARR: return "list";
        case YYJSON_TYPE_OBJ: return "dict";
        default: return "NoneType";
    }
}

/* Each refuse_* writes the parser's detail into cx->detail and returns REJECT (or DEFER,
 * when it cannot write it as Python would). */
static int refuse(Ctx *cx, int reason, const char *detail) {
    cx->reason = reason;
    cx->detail.len = 0;
    TRY(put_cstr(&cx->detail, detail));
    return REJECT;
}

/* unknown_op: f"op {op!r} is not one of {', '.join(sorted(OPS))}"; ``lit`` the repr of a
 * value that is not text (None, True, 3), else ``s`` the text. */
static int refuse_op(Ctx *cx, const char *lit, const char *s, size_t n) {
    Buf *d = &cx->detail;
    cx->reason = R_UNKNOWN_OP;
    d->len = 0;
    TRY(put_raw(d, "op ", 3));
    TRY(lit ? put_cstr(d, lit) : put_repr(d, s, n));
    TRY(put_cstr(d, " is not one of "));
    TRY(put_cstr(d, OPS_LISTED));
    return REJECT;
}

/* The repr of a JSON op that is not text, for refuse_op (NULL: not one the codec writes). */
static const char *json_op_literal(yyjson_val *v, char num[24]) {
    if (!v || yyjson_is_null(v)) return "None";
    if (yyjson_is_bool(v)) return yyjson_get_bool(v) ? "True" : "False";
    if (yyjson_is_uint(v)) {
        snprintf(num, 24, "%llu", (unsigned long long)yyjson_get_uint(v));
        return num;
    }
    if (yyjson_is_sint(v)) {
        snprintf(num, 24, "%lld", (long long)yyjson_get_sint(v));
        return num;
    }
    return NULL;  /* a real, a list, an object: Python's repr, not ours to write */
}

/* missing_field: f"{op} needs a non-empty {name!r}" (``op`` valid: upsert or delete) */
static int refuse_missing(Ctx *cx, const Span *op, const char *name) {
    Buf *d = &cx->detail;
    cx->reason = R_MISSING_FIELD;
    d->len = 0;
    TRY(put_raw(d, op->p, op->n));
    TRY(put_cstr(d, " needs a non-empty '"));
    TRY(put_cstr(d, name));
    TRY(put_byte(d, '\''));
    return REJECT;
}

/* bad_field: f"{name} must be {what}, got {type(value).__name__}" */
static int refuse_type(Ctx *cx, const char *name, const char *what, yyjson_val *v) {
    Buf *d = &cx->detail;
    cx->reason = R_BAD_FIELD;
    d->len = 0;
    TRY(put_cstr(d, name));
    TRY(put_cstr(d, " must be "));
    TRY(put_cstr(d, what));
    TRY(put_cstr(d, ", got "));
    TRY(put_cstr(d, py_type_name(v)));
    return REJECT;
}

/* wrong_dimension: f"vector has {dim} values, collection {collection!r} has dimension {known}" */
static int refuse_dimension(Ctx *cx, size_t dim, const Span *coll, long known) {
    Buf *d = &cx->detail;
    cx->reason = R_WRONG_DIMENSION;
    d->len = 0;
    TRY(put_cstr(d, "vector has "));
    TRY(put_ll(d, (long long)dim));
    TRY(put_cstr(d, " values, collection "));
    TRY(put_repr(d, coll->p, coll->n));
    TRY(put_cstr(d, " has dimension "));
    TRY(put_ll(d, known));
    return REJECT;
}

/* bad_vector, a JSON list holding ``x``, the first value that is not a number:
 * f"vector must be a flat list of numbers, got a {kind} ({str(x)[:20]!r})" */
static int refuse_element(Ctx *cx, yyjson_val *x) {
    Buf *d = &cx->detail;
    cx->reason = R_BAD_VECTOR;
    d->len = 0;
    TRY(put_cstr(d, "vector must be a flat list of numbers, got a "));
    if (yyjson_is_null(x)) {
        TRY(put_cstr(d, "null ('None')"));
    } else if (yyjson_is_str(x)) {
        size_t n = yyjson_get_len(x);
        TRY(put_cstr(d, "string ("));
        TRY(put_repr(d, yyjson_get_str(x), n < 20 ? n : 20));  /* ASCII: 20 bytes, 20 chars */
        TRY(put_byte(d, ')'));
    } else {
        return DEFER;  /* a list or an object: str() of it is Python's to write */
    }
    return REJECT;
}

/* bad_vector, Avro bytes: f"vector has {n} bytes, not a multiple of 4" */
static int refuse_vector_bytes(Ctx *cx, size_t n) {
    Buf *d = &cx->detail;
    cx->reason = R_BAD_VECTOR;
    d->len = 0;
    TRY(put_cstr(d, "vector has "));
    TRY(put_ll(d, (long long)n));
    TRY(put_cstr(d, " bytes, not a multiple of 4"));
    return REJECT;
}

/* oversize: f"{len(value)} bytes is over capture.max_event_bytes={max_event_bytes}" */
static int refuse_oversize(Buf *d, Py_ssize_t n, Py_ssize_t max_bytes) {
    TRY(put_ll(d, (long long)n));
    TRY(put_cstr(d, " bytes is over capture.max_event_bytes="));
    return put_ll(d, (long long)max_bytes);
}

/* No deeper than jw_val writes (orjson.dumps refuses what is nested too deep). */
static int depth_ok(yyjson_val *v, int depth) {
    if (depth > MAX_DEPTH) return 0;
    if (yyjson_is_arr(v)) {
        yyjson_arr_iter it = yyjson_arr_iter_with(v);
        yyjson_val *x;
        while ((x = yyjson_arr_iter_next(&it)))
            if (!depth_ok(x, depth + 1)) return 0;
    } else if (yyjson_is_obj(v)) {
        yyjson_obj_iter it = yyjson_obj_iter_with(v);
        yyjson_val *k;
        while ((k = yyjson_obj_iter_next(&it)))
            if (!depth_ok(yyjson_obj_iter_get_val(k), depth + 1)) return 0;
    }
    return 1;
}

#endif

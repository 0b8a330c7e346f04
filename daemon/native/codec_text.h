/* codec_text.h: growable buffers, Avro primitives, UTF-8 checks and JSON text written as orjson writes it.
 *
 * Part of the event codec: included by eventcodec.c (one translation unit), in order. */
#ifndef VECWAL_CODEC_TEXT_H
#define VECWAL_CODEC_TEXT_H

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

#endif  /* VECWAL_CODEC_TEXT_H */

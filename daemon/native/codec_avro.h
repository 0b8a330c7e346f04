/* codec_avro.h: Avro events (schemas/change_event.avsc) gathered into an Event.
 *
 * Part of the event codec: included by eventcodec.c (one translation unit), in order. */
#ifndef VECWAL_CODEC_AVRO_H
#define VECWAL_CODEC_AVRO_H

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

#endif  /* VECWAL_CODEC_AVRO_H */

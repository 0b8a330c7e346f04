/* codec_record.h: the change-log record datum written from a gathered event.
 *
 * Part of the event codec: included by eventcodec.c (one translation unit), in order. */
#ifndef VECWAL_CODEC_RECORD_H
#define VECWAL_CODEC_RECORD_H

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

#endif  /* VECWAL_CODEC_RECORD_H */

/* codec_json.h: JSON events (read by yyjson) gathered into an Event.
 *
 * Part of the event codec: included by eventcodec.c (one translation unit), in order. */
#ifndef VECWAL_CODEC_JSON_H
#define VECWAL_CODEC_JSON_H

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

#endif  /* VECWAL_CODEC_JSON_H */

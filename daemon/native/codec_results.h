/* eventcodec's answers, built from the pass's items (GIL held), part of eventcodec.c: per
 * message (encode_batch: build_events) or in runs (encode_runs: build_runs). */

/* A tuple of n new references (each may be NULL: then all are released and NULL returned). */
static PyObject *pack(PyObject **fields, int n) {
    int failed = 0;
    for (int f = 0; f < n; f++)
        if (!fields[f]) failed = 1;
    PyObject *tup = failed ? NULL : PyTuple_New(n);
    if (!tup) {
        for (int f = 0; f < n; f++) Py_XDECREF(fields[f]);
        return NULL;
    }
    for (int f = 0; f < n; f++) PyTuple_SET_ITEM(tup, f, fields[f]);
    return tup;
}

/* A bad event the codec refused: QuarantineEntry's fields, in its order. */
static PyObject *refused_tuple(const Item *it, const char *detail) {
    PyObject *fields[8] = {
        Py_NewRef(it->topic), PyLong_FromLongLong(it->partition),
        PyLong_FromLongLong(it->offset), PyLong_FromLongLong(it->timestamp),
        Py_NewRef(s_reasons[it->op]),
        PyUnicode_DecodeUTF8(detail, (Py_ssize_t)it->id_n, "strict"),
        Py_NewRef(it->key), Py_NewRef(it->value),
    };
    return pack(fields, 8);
}

/* Per message of the pass: its Encoded tuple, its Refused tuple or None (encode_batch). */
static PyObject *build_events(Item *items, Py_ssize_t stop, const Buf *out, const Buf *names) {
    PyObject *list = PyList_New(stop), *last_coll = NULL;
    if (!list) return NULL;
    const char *last_coll_p = NULL;
    size_t last_coll_n = 0;
    for (Py_ssize_t i = 0; i < stop; i++) {
        Item *it = &items[i];
        const char *cp = names->p + it->names_off;
        PyObject *entry;
        if (it->deferred == REJECT) {
            entry = refused_tuple(it, cp);
        } else if (it->deferred) {
            entry = Py_NewRef(Py_None);
        } else {
            if (!last_coll || last_coll_n != it->coll_n ||
                memcmp(last_coll_p, cp, it->coll_n) != 0) {
                Py_XDECREF(last_coll);
                last_coll = PyUnicode_DecodeUTF8(cp, (Py_ssize_t)it->coll_n, "strict");
                if (!last_coll) { Py_DECREF(list); return NULL; }
                last_coll_p = cp;
                last_coll_n = it->coll_n;
            }
            PyObject *fields[10] = {
                Py_NewRef(it->topic), PyLong_FromLongLong(it->partition),
                PyLong_FromLongLong(it->offset), PyLong_FromLongLong(it->timestamp),
                Py_NewRef(it->key), PyLong_FromSsize_t(PyBytes_GET_SIZE(it->value)),
                PyBytes_FromStringAndSize(out->p + it->out_off, (Py_ssize_t)it->out_len),
                Py_NewRef(it->op == OP_UPSERT ? s_upsert : s_delete), Py_NewRef(last_coll),
                PyUnicode_DecodeUTF8(cp + it->coll_n, (Py_ssize_t)it->id_n, "strict"),
            };
            entry = pack(fields, 10);
        }
        if (!entry) {
            Py_XDECREF(last_coll);
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    Py_XDECREF(last_coll);
    return list;
}

/* Whether encoded b continues a's run: the same topic, partition and collection, a later
 * offset. */
static int same_run(const Item *a, const Item *b, const Buf *names) {
    if (b->deferred || b->partition != a->partition || b->offset <= a->offset ||
        b->coll_n != a->coll_n ||
        memcmp(names->p + a->names_off, names->p + b->names_off, a->coll_n) != 0)
        return 0;
    if (a->topic == b->topic) return 1;
    if (!PyUnicode_CheckExact(a->topic) || !PyUnicode_CheckExact(b->topic)) return 0;
    return PyUnicode_Compare(a->topic, b->topic) == 0;
}

/* The Run of items[0:n]: (first, topic, partition, collection, offsets, timestamps,
 * value_sizes, datums, ops, ids), the lists parallel, one entry per message. */
static PyObject *run_tuple(const Item *items, Py_ssize_t n, Py_ssize_t first, const Buf *out,
                           const Buf *names) {
    PyObject *lists[6];
    for (int l = 0; l < 6; l++) lists[l] = PyList_New(n);
    int failed = 0;
    for (int l = 0; l < 6; l++)
        if (!lists[l]) failed = 1;
    for (Py_ssize_t k = 0; k < n && !failed; k++) {
        const Item *it = &items[k];
        const char *cp = names->p + it->names_off;
        PyObject *v[6] = {
            PyLong_FromLongLong(it->offset), PyLong_FromLongLong(it->timestamp),
            PyLong_FromSsize_t(PyBytes_GET_SIZE(it->value)),
            PyBytes_FromStringAndSize(out->p + it->out_off, (Py_ssize_t)it->out_len),
            Py_NewRef(it->op == OP_UPSERT ? s_upsert : s_delete),
            PyUnicode_DecodeUTF8(cp + it->coll_n, (Py_ssize_t)it->id_n, "strict"),
        };
        for (int l = 0; l < 6; l++) {
            if (!v[l]) failed = 1;
            PyList_SET_ITEM(lists[l], k, v[l]);  /* NULL slots are fine to free */
        }
    }
    if (failed) {
        for (int l = 0; l < 6; l++) Py_XDECREF(lists[l]);
        return NULL;
    }
    PyObject *fields[10] = {
        PyLong_FromSsize_t(first), Py_NewRef(items[0].topic),
        PyLong_FromLongLong(items[0].partition),
        PyUnicode_DecodeUTF8(names->p + items[0].names_off, (Py_ssize_t)items[0].coll_n,
                             "strict"),
        lists[0], lists[1], lists[2], lists[3], lists[4], lists[5],
    };
    return pack(fields, 10);
}

/* The pass as runs (encode_runs): each run of encoded messages as its Run, a message the
 * Python parser must decide as its index in the batch, a refused one as its Refused tuple. */
static PyObject *build_runs(Item *items, Py_ssize_t start, Py_ssize_t stop, const Buf *out,
                            const Buf *names) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (Py_ssize_t i = 0, j; i < stop; i = j) {
        Item *it = &items[i];
        PyObject *entry;
        j = i + 1;
        if (it->deferred == REJECT) {
            entry = refused_tuple(it, names->p + it->names_off);
        } else if (it->deferred) {
            entry = PyLong_FromSsize_t(start + i);
        } else {
            while (j < stop && same_run(&items[j - 1], &items[j], names)) j++;
            entry = run_tuple(it, j - i, start + i, out, names);
        }
        if (!entry || PyList_Append(list, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(entry);
    }
    return list;
}

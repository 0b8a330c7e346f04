/* tenantseal: per-tenant sealing (daemon/keys/sealing.py) on encoded records, in C, with
 * OpenSSL's AES-SIV. The reference is TenantSealer in Python, on record dicts: for every
 * record this module handles, its bytes must equal what fastavro makes of the reference's
 * result (tests/unit/test_tenantseal.py holds it to that).
 *
 * A record's content is eight fields (vector, sparse_indices, sparse_values, document,
 * metadata, acl, source, extra), listed in that order, with the same types, by both the
 * change-log record and the snapshot record: their encoded bytes, one after the other, are
 * the envelope. Sealed, `vector` holds key id (8) | AES-SIV tag (16) | ciphertext of the
 * envelope, with the associated data "content" NUL collection NUL tenant NUL id, and the
 * other seven are null. Everything else stays as it is: ids, coordinates, event_id, and the
 * Kafka headers (they name a batch, for history and rollback, and are not content).
 *
 * seal_record(datum, keys, resolve) -> bytes
 *     A change-log record datum with its content sealed (the datum itself when it is not an
 *     upsert with an id). keys maps collection NUL tenant (UTF-8 bytes) to (key id, 64-byte
 *     SIV key); on a miss resolve(collection, tenant) gives the pair, and it is kept in keys.
 *
 * open_rows(data, into, keys, resolve) -> (used, lengths, content lengths, hashes, gone)
 *     Every snapshot row in data (a data file block's bytes) with its content opened, one
 *     after the other, written at the start of into (a writable buffer at least as long as
 *     data: an opened row is shorter than its sealed form), and how many bytes that took;
 *     each opened row's length and the length of its content (every field before the
 *     version fields), as little-endian u4 arrays; the xxh3-128 of each row's content as the
 *     row index keeps it (16 bytes, little-endian); the numbers of the rows left out because
 *     their tenant was forgotten. keys maps key id to the SIV key, or None for a destroyed
 *     key; on a miss resolve(key id, collection, tenant) gives it, and it is kept in keys.
 *
 * set_lanes(on) -> bool
 *     Whether open_rows checks the rows of a block together, LANES at a time (siv_lanes.h;
 *     on where the CPU has AES-NI, unless VECWAL_NO_SIV_LANES is set), or one by one with
 *     OpenSSL; what it was before. The result is the same: tests and benchmarks compare.
 *
 * ValueError: a record this module cannot read, or content that is not sealed or does not
 * open (the caller names the file and the fix). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"

#define KEY_ID 8
#define TAG 16
#define SIV_KEY 64

enum { T_LONG, T_STR, T_NSTR, T_NLONG, T_BOOL, T_NARR, T_NMODEL, T_NHEADERS };

typedef struct { const char *name; const char *spelled; int type; int content; } Field;

/* schemas/changelog_record.avsc; content marks the envelope's fields */
static const Field LOG[] = {
    {"offset", "long", T_LONG, 0}, {"timestamp", "long", T_LONG, 0},
    {"key", "null|bytes", T_NSTR, 0}, {"op", "string", T_STR, 0},
    {"collection", "string", T_STR, 0}, {"tenant", "string", T_STR, 0},
    {"id", "null|string", T_NSTR, 0}, {"dimension", "null|int", T_NLONG, 0},
    {"vector", "null|bytes", T_NSTR, 1}, {"sparse_indices", "null|bytes", T_NSTR, 1},
    {"sparse_values", "null|bytes", T_NSTR, 1}, {"document", "null|string", T_NSTR, 1},
    {"document_is_json", "boolean", T_BOOL, 0}, {"metadata", "null|string", T_NSTR, 1},
    {"acl", "null|array<string>", T_NARR, 1},
    {"embedding_model", "null|EmbeddingModel{name:string,version:null|string}", T_NMODEL, 0},
    {"source", "null|string", T_NSTR, 1}, {"alias", "null|string", T_NSTR, 0},
    {"schema", "null|string", T_NSTR, 0}, {"settings", "null|string", T_NSTR, 0},
    {"event_id", "null|string", T_NSTR, 0}, {"event_time", "null|string", T_NSTR, 0},
    {"extra", "null|string", T_NSTR, 1}, {"producer_timestamp", "null|long", T_NLONG, 0},
    {"headers", "null|array<Header{key:string,value:null|bytes}>", T_NHEADERS, 0},
    {"headers_truncated", "boolean", T_BOOL, 0},
};
#define LOG_N ((int)(sizeof LOG / sizeof LOG[0]))
enum { LOG_OP = 3, LOG_COLLECTION = 4, LOG_TENANT = 5, LOG_ID = 6, LOG_VECTOR = 8 };

/* schemas/snapshot_record.avsc */
static const Field ROW[] = {
    {"collection", "string", T_STR, 0}, {"tenant", "string", T_STR, 0},
    {"id", "string", T_STR, 0}, {"dimension", "null|int", T_NLONG, 0},
    {"vector", "null|bytes", T_NSTR, 1}, {"sparse_indices", "null|bytes", T_NSTR, 1},
    {"sparse_values", "null|bytes", T_NSTR, 1}, {"document", "null|string", T_NSTR, 1},
    {"document_is_json", "boolean", T_BOOL, 0}, {"metadata", "null|string", T_NSTR, 1},
    {"acl", "null|array<string>", T_NARR, 1},
    {"embedding_model", "null|EmbeddingModel{name:string,version:null|string}", T_NMODEL, 0},
    {"source", "null|string", T_NSTR, 1}, {"event_id", "null|string", T_NSTR, 0},
    {"event_time", "null|string", T_NSTR, 0}, {"extra", "null|string", T_NSTR, 1},
    {"last_offset", "long", T_LONG, 0}, {"last_timestamp", "long", T_LONG, 0},
    {"last_partition", "int", T_LONG, 0}, {"last_topic", "string", T_STR, 0},
};
#define ROW_N ((int)(sizeof ROW / sizeof ROW[0]))
enum { ROW_COLLECTION = 0, ROW_TENANT = 1, ROW_ID = 2, ROW_VECTOR = 4, ROW_VERSION = 16 };

#define CONTENT_N 8
static const int ENVELOPE_TYPES[CONTENT_N] = {T_NSTR, T_NSTR, T_NSTR, T_NSTR, T_NSTR, T_NARR,
                                               T_NSTR, T_NSTR};

static EVP_CIPHER *SIV, *CTR;

/* -- reading Avro ---------------------------------------------------------------------- */
typedef struct { const uint8_t *p; size_t n, pos; } Cur;

static int rd_long(Cur *c, int64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->pos >= c->n) return -1;
        uint8_t b = c->p[c->pos++];
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
    }
    return -1;
}

static int skip_bytes(Cur *c) {
    int64_t len;
    if (rd_long(c, &len) || len < 0 || (uint64_t)len > c->n - c->pos) return -1;
    c->pos += (size_t)len;
    return 0;
}

static int rd_branch(Cur *c, int64_t *branch) {
    if (rd_long(c, branch) || (*branch != 0 && *branch != 1)) return -1;
    return 0;
}

static int skip(Cur *c, int type) {
    int64_t v;
    switch (type) {
    case T_LONG: return rd_long(c, &v);
    case T_STR: return skip_bytes(c);
    case T_BOOL:
        if (c->pos >= c->n || c->p[c->pos] > 1) return -1;
        c->pos++;
        return 0;
    }
    if (rd_branch(c, &v)) return -1;
    if (v == 0) return 0;
    switch (type) {
    case T_NSTR: return skip_bytes(c);
    case T_NLONG: return rd_long(c, &v);
    case T_NMODEL: return skip_bytes(c) || skip(c, T_NSTR);
    case T_NARR:
    case T_NHEADERS:  /* an array of strings, or of {key: string, value: null|bytes} */
        for (;;) {
            int64_t count;
            if (rd_long(c, &count)) return -1;
            if (count == 0) return 0;
            if (count < 0) {
                int64_t size;
                if (rd_long(c, &size)) return -1;
                count = -count;
            }
            for (int64_t i = 0; i < count; i++)
                if (skip_bytes(c) || (type == T_NHEADERS && skip(c, T_NSTR))) return -1;
        }
    }
    return -1;
}

/* Every field's start (starts[n] is the end); -1 when the record does not read. */
static int walk(Cur *c, const Field *fields, int n, size_t *starts) {
    for (int i = 0; i < n; i++) {
        starts[i] = c->pos;
        if (skip(c, fields[i].type)) return -1;
    }
    starts[n] = c->pos;
    return 0;
}

/* A string field's bytes (p, len) at its start (a plain string, or a union's branch 1). */
static const uint8_t *str_at(const uint8_t *p, size_t at, size_t end, int nullable,
                             size_t *len) {
    Cur c = {p, end, at};
    int64_t v;
    if (nullable && (rd_branch(&c, &v) || v != 1)) return NULL;
    if (rd_long(&c, &v) || v < 0 || (uint64_t)v > end - c.pos) return NULL;
    *len = (size_t)v;
    return p + c.pos;
}

/* -- writing --------------------------------------------------------------------------- */
typedef struct { uint8_t *p; size_t len, cap; } Buf;

static int room(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap * 2 : 1 << 16;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put(Buf *b, const void *s, size_t n) {
    if (room(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static size_t long_size(int64_t v) {
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t k = 1;
    while (n > 0x7F) { n >>= 7; k++; }
    return k;
}

static uint8_t *put_long_at(uint8_t *q, int64_t v) {
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (n > 0x7F) { *q++ = (uint8_t)((n & 0x7F) | 0x80); n >>= 7; }
    *q++ = (uint8_t)n;
    return q;
}

/* "content" NUL collection NUL tenant NUL id */
static int associated(Buf *b, const uint8_t *coll, size_t cn, const uint8_t *ten, size_t tn,
                      const uint8_t *id, size_t in) {
    b->len = 0;
    return put(b, "content", 8) || put(b, coll, cn) || put(b, "", 1) || put(b, ten, tn) ||
           put(b, "", 1) || put(b, id, in);
}

static int fail(const char *what) {
    PyErr_SetString(PyExc_ValueError, what);
    return -1;
}

/* -- AES-SIV ----------------------------------------------------------------------------- */
#include "siv_lanes.h"

/* Keying OpenSSL 3.0's AES-SIV costs about 3.8 us (it fetches and keys its CMAC and CTR each
 * time), more than sealing a 1 KB record; a context copied from one keyed once costs about
 * 1 us. So each key is keyed once, into a template per direction, kept in a small table
 * (touched only with the GIL held). */
typedef struct {
    uint8_t key[SIV_KEY];
    EVP_CIPHER_CTX *tpl[2];
    EVP_CIPHER_CTX *ctr;  /* AES-256-CTR under K2, for the lanes (siv_lanes.h) */
    S2vKey *s2v;
    int used;
} Keyed;
#define KEYED_N 64
static Keyed KEYED[KEYED_N];
static int keyed_next;

static Keyed *keyed_slot(const uint8_t *key) {
    for (int i = 0; i < KEYED_N; i++)
        if (KEYED[i].used && !memcmp(KEYED[i].key, key, SIV_KEY)) return &KEYED[i];
    Keyed *k = &KEYED[keyed_next];  /* a new key takes the oldest slot */
    keyed_next = (keyed_next + 1) % KEYED_N;
    for (int d = 0; d < 2; d++) EVP_CIPHER_CTX_free(k->tpl[d]);
    EVP_CIPHER_CTX_free(k->ctr);
    free(k->s2v);
    memset(k, 0, sizeof *k);
    memcpy(k->key, key, SIV_KEY);
    k->used = 1;
    return k;
}

static EVP_CIPHER_CTX *keyed(const uint8_t *key, int enc) {
    Keyed *k = keyed_slot(key);
    if (!k->tpl[enc]) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        if (!ctx || EVP_CipherInit_ex2(ctx, SIV, key, NULL, enc, NULL) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            fail("AES-SIV keying failed");
            return NULL;
        }
        k->tpl[enc] = ctx;
    }
    return k->tpl[enc];
}

/* The key's slot with what the lanes need: its CTR context and its S2V key. */
static Keyed *keyed_lanes(const uint8_t *key) {
    Keyed *k = keyed_slot(key);
    if (!k->ctr) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        S2vKey *s = aligned_alloc(16, sizeof(S2vKey));
        if (!ctx || !s || EVP_CipherInit_ex2(ctx, CTR, key + SIV_KEY / 2, NULL, 1, NULL) != 1) {
            EVP_CIPHER_CTX_free(ctx);
            free(s);
            fail("AES-CTR keying failed");
            return NULL;
        }
        s2v_key(s, key);
        k->ctr = ctx;
        k->s2v = s;
    }
    return k;
}

/* ctx: a copy of keyed(key, 1). out: tag (16) then the ciphertext (n). */
static int siv_seal(EVP_CIPHER_CTX *ctx, const Buf *aad, const uint8_t *in, size_t n,
                    uint8_t *out) {
    int len = 0;
    if (n > INT32_MAX || aad->len > INT32_MAX) return -1;
    if (EVP_EncryptUpdate(ctx, NULL, &len, aad->p, (int)aad->len) != 1 ||
        EVP_EncryptUpdate(ctx, out + TAG, &len, in, (int)n) != 1 ||
        EVP_EncryptFinal_ex(ctx, out + TAG + len, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG, out) != 1)
        return -1;
    return 0;
}

static int siv_open(EVP_CIPHER_CTX *ctx, EVP_CIPHER_CTX *tpl, const Buf *aad,
                    const uint8_t *in, size_t n, uint8_t *out) {
    int len = 0;
    if (n < TAG || n - TAG > INT32_MAX || aad->len > INT32_MAX)
        return fail("sealed content is too short");
    if (EVP_CIPHER_CTX_copy(ctx, tpl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)in) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, aad->p, (int)aad->len) != 1 ||
        EVP_DecryptUpdate(ctx, out, &len, in + TAG, (int)(n - TAG)) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + len, &len) != 1)
        return fail("sealed content does not open (changed, moved, or another key)");
    return 0;
}

/* -- seal_record ------------------------------------------------------------------------- */
static PyObject *seal_key(PyObject *keys, PyObject *resolve, const uint8_t *coll, size_t cn,
                          const uint8_t *ten, size_t tn) {
    PyObject *name = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(cn + 1 + tn));
    if (!name) return NULL;
    char *q = PyBytes_AS_STRING(name);
    memcpy(q, coll, cn);
    q[cn] = 0;
    memcpy(q + cn + 1, ten, tn);
    PyObject *pair = PyDict_GetItemWithError(keys, name);  /* borrowed */
    if (pair) { Py_INCREF(pair); Py_DECREF(name); return pair; }
    if (PyErr_Occurred()) { Py_DECREF(name); return NULL; }
    pair = PyObject_CallFunction(resolve, "y#y#", (const char *)coll, (Py_ssize_t)cn,
                                 (const char *)ten, (Py_ssize_t)tn);
    if (pair && PyDict_SetItem(keys, name, pair)) Py_CLEAR(pair);
    Py_DECREF(name);
    return pair;
}

static PyObject *seal_record(PyObject *self, PyObject *args) {
    Py_buffer in;
    PyObject *keys, *resolve;
    if (!PyArg_ParseTuple(args, "y*O!O:seal_record", &in, &PyDict_Type, &keys, &resolve))
        return NULL;
    PyObject *result = NULL, *pair = NULL;
    Buf aad = {0}, env = {0};
    const uint8_t *p = in.buf;
    size_t st[LOG_N + 1], n;
    Cur c = {p, (size_t)in.len, 0};
    if (walk(&c, LOG, LOG_N, st) || c.pos != c.n) {
        fail("not a change-log record");
        goto done;
    }
    const uint8_t *op = str_at(p, st[LOG_OP], st[LOG_OP + 1], 0, &n);
    size_t cn, tn, in_;
    const uint8_t *id = str_at(p, st[LOG_ID], st[LOG_ID + 1], 1, &in_);
    if (!op || n != 6 || memcmp(op, "upsert", 6) || !id) {  /* nothing to seal */
        result = PyBytes_FromStringAndSize((const char *)p, in.len);
        goto done;
    }
    const uint8_t *coll = str_at(p, st[LOG_COLLECTION], st[LOG_COLLECTION + 1], 0, &cn);
    const uint8_t *ten = str_at(p, st[LOG_TENANT], st[LOG_TENANT + 1], 0, &tn);
    if (!coll || !ten) { fail("not a change-log record"); goto done; }
    pair = seal_key(keys, resolve, coll, cn, ten, tn);
    if (!pair) goto done;
    const char *key_id, *siv;
    Py_ssize_t kn, sn;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 0), (char **)&key_id, &kn) ||
        PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 1), (char **)&siv, &sn) ||
        kn != KEY_ID || sn != SIV_KEY) {
        if (!PyErr_Occurred()) fail("a tenant key is (8-byte id, 64-byte SIV key)");
        goto done;
    }
    for (int i = 0; i < LOG_N; i++)
        if (LOG[i].content && put(&env, p + st[i], st[i + 1] - st[i])) goto done;
    if (associated(&aad, coll, cn, ten, tn, id, in_)) goto done;
    size_t sealed = KEY_ID + TAG + env.len, out_len = st[LOG_VECTOR] + 1 + long_size(
        (int64_t)sealed) + sealed;
    for (int i = LOG_VECTOR + 1; i < LOG_N; i++)
        out_len += LOG[i].content ? 1 : st[i + 1] - st[i];
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out_len);
    if (!result) goto done;
    uint8_t *q = (uint8_t *)PyBytes_AS_STRING(result);
    memcpy(q, p, st[LOG_VECTOR]);
    q += st[LOG_VECTOR];
    *q++ = 2;  /* the union's branch 1: bytes */
    q = put_long_at(q, (int64_t)sealed);
    memcpy(q, key_id, KEY_ID);
    uint8_t *box = q + KEY_ID;
    q += sealed;
    for (int i = LOG_VECTOR + 1; i < LOG_N; i++) {
        if (LOG[i].content) {
            *q++ = 0;  /* null */
        } else {
            memcpy(q, p + st[i], st[i + 1] - st[i]);
            q += st[i + 1] - st[i];
        }
    }
    EVP_CIPHER_CTX *tpl = keyed((const uint8_t *)siv, 1), *ctx = EVP_CIPHER_CTX_new();
    int bad = !tpl || !ctx || EVP_CIPHER_CTX_copy(ctx, tpl) != 1;
    if (!bad) {
        Py_BEGIN_ALLOW_THREADS
        bad = siv_seal(ctx, &aad, env.p, env.len, box) != 0;
        Py_END_ALLOW_THREADS
    }
    EVP_CIPHER_CTX_free(ctx);
    if (bad) {
        Py_CLEAR(result);
        if (!PyErr_Occurred()) fail("AES-SIV sealing failed");
    }
done:
    Py_XDECREF(pair);
    PyMem_Free(aad.p);
    PyMem_Free(env.p);
    PyBuffer_Release(&in);
    return result;
}

/* -- open_rows --------------------------------------------------------------------------- */
/* The SIV key of key_id (borrowed from keys), Py_None for a destroyed key, NULL on error. */
static PyObject *open_key(PyObject *keys, PyObject *resolve, const uint8_t *key_id,
                          const uint8_t *coll, size_t cn, const uint8_t *ten, size_t tn) {
    PyObject *name = PyBytes_FromStringAndSize((const char *)key_id, KEY_ID);
    if (!name) return NULL;
    PyObject *key = PyDict_GetItemWithError(keys, name);  /* borrowed */
    if (!key && !PyErr_Occurred()) {
        key = PyObject_CallFunction(resolve, "Oy#y#", name, (const char *)coll, (Py_ssize_t)cn,
                                    (const char *)ten, (Py_ssize_t)tn);
        if (key && PyDict_SetItem(keys, name, key)) Py_CLEAR(key);
        Py_XDECREF(key);  /* keys holds it */
    }
    Py_DECREF(name);
    if (key && key != Py_None && (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != SIV_KEY)) {
        fail("a tenant's SIV key is 64 bytes");
        return NULL;
    }
    return key;
}

static int append_int(PyObject *list, size_t v) {
    PyObject *o = PyLong_FromSize_t(v);
    int r = !o || PyList_Append(list, o);
    Py_XDECREF(o);
    return r ? -1 : 0;
}

/* A row being opened: where its opened bytes go, its fields' starts in the block, and the
 * length of its content envelope (decrypted at opened + at + head). */
typedef struct { size_t at, envn, st[ROW_N + 1]; } Opening;

typedef struct {
    Opening *rows;
    Check *checks;
    S2vKey *keys;
    Mac *macs;
    size_t nrows, ncheck, nkeys, cap_rows, cap_checks, cap_keys;
} Block;

static int grow(void **p, size_t *cap, size_t n, size_t size, int aligned) {
    if (n < *cap) return 0;
    size_t cap2 = *cap ? *cap * 2 : 256;
    void *q = aligned ? aligned_alloc(16, cap2 * size) : realloc(*p, cap2 * size);
    if (!q) { PyErr_NoMemory(); return -1; }
    if (aligned) { if (*p) memcpy(q, *p, *cap * size); free(*p); }
    *p = q;
    *cap = cap2;
    return 0;
}

static void block_free(Block *b) {
    free(b->rows);
    free(b->checks);
    free(b->keys);
    free(b->macs);
}

/* The row's envelope, decrypted at q and checked (OpenSSL, one record), or decrypted at q by
 * CTR and left to the block's check (the lanes). */
static int decrypt(Block *b, Keyed *lanes, EVP_CIPHER_CTX *ctx, EVP_CIPHER_CTX *tpl,
                   Buf *aads, size_t aad_at, const uint8_t *box, size_t n, uint8_t *q) {
    if (n < TAG || n - TAG > INT32_MAX) return fail("sealed content is too short");
    if (!lanes) {
        Buf aad = {aads->p + aad_at, aads->len - aad_at, 0};
        return siv_open(ctx, tpl, &aad, box, n, q);
    }
    uint8_t iv[TAG];
    int len = 0;
    memcpy(iv, box, TAG);
    iv[8] &= 0x7F;  /* RFC 5297: the counter is V with bits 63 and 31 cleared */
    iv[12] &= 0x7F;
    if (EVP_EncryptInit_ex2(lanes->ctr, NULL, NULL, iv, NULL) != 1 ||
        EVP_EncryptUpdate(lanes->ctr, q, &len, box + TAG, (int)(n - TAG)) != 1)
        return fail("AES-CTR failed");
    if (grow((void **)&b->checks, &b->cap_checks, b->ncheck, sizeof(Check), 0)) return -1;
    Check *c = &b->checks[b->ncheck++];
    c->key = b->nkeys - 1;
    c->aad_at = aad_at;
    c->aad_len = aads->len - aad_at;
    c->plain = q;
    c->plain_len = n - TAG;
    memcpy(c->tag, box, TAG);
    return 0;
}

/* The opened row in place: its envelope's first four fields are the row's next four; the
 * other four are moved behind, between the fields that are not content. */
static int arrange(const Opening *r, const uint8_t *p, uint8_t *q0, Buf *tail,
                   size_t *content) {
    uint8_t *q = q0 + (r->st[ROW_VECTOR] - r->st[0]);
    const size_t *st = r->st;
    size_t est[CONTENT_N + 1], envn = r->envn;
    Cur e = {q, envn, 0};
    for (int k = 0; k < CONTENT_N; k++) {
        est[k] = e.pos;
        if (skip(&e, ENVELOPE_TYPES[k])) return fail("opened content does not read");
    }
    est[CONTENT_N] = e.pos;
    if (e.pos != e.n) return fail("opened content does not read");
    tail->len = 0;
    if (put(tail, q + est[4], envn - est[4])) return -1;
    q += est[4];
    for (int i = ROW_VECTOR + 4, k = 4; i < ROW_VERSION; i++) {
        const uint8_t *from = ROW[i].content ? tail->p + est[k] - est[4] : p + st[i];
        size_t len = ROW[i].content ? est[k + 1] - est[k] : st[i + 1] - st[i];
        k += ROW[i].content;
        memcpy(q, from, len);
        q += len;
    }
    *content = (size_t)(q - q0);
    memcpy(q, p + st[ROW_VERSION], st[ROW_N] - st[ROW_VERSION]);
    return 0;
}

static PyObject *open_rows(PyObject *self, PyObject *args) {
    Py_buffer in, into;
    PyObject *keys, *resolve;
    if (!PyArg_ParseTuple(args, "y*w*O!O:open_rows", &in, &into, &PyDict_Type, &keys, &resolve))
        return NULL;
    PyObject *lengths = NULL, *contents = NULL, *hashes = NULL, *gone = PyList_New(0);
    PyObject *result = NULL;
    size_t used = 0;
    Buf aads = {0}, tail = {0};
    Block blk = {0};
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    const uint8_t *p = in.buf, *last_id = NULL;
    EVP_CIPHER_CTX *tpl = NULL;
    Keyed *lanes = NULL;
    int use_lanes = lanes_usable(), have_key = 0;
    Cur c = {p, (size_t)in.len, 0};
    if (!gone || !ctx) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    if (into.len < in.len) {
        fail("the buffer to open into is shorter than the rows");
        goto done;
    }
    uint8_t *out = into.buf;
    for (size_t row = 0; c.pos < c.n; row++) {
        size_t st[ROW_N + 1], cn, tn, idn, vn;
        if (walk(&c, ROW, ROW_N, st)) { fail("a row does not read as a snapshot record"); goto done; }
        const uint8_t *coll = str_at(p, st[ROW_COLLECTION], st[ROW_COLLECTION + 1], 0, &cn);
        const uint8_t *ten = str_at(p, st[ROW_TENANT], st[ROW_TENANT + 1], 0, &tn);
        const uint8_t *id = str_at(p, st[ROW_ID], st[ROW_ID + 1], 0, &idn);
        const uint8_t *box = str_at(p, st[ROW_VECTOR], st[ROW_VECTOR + 1], 1, &vn);
        int sealed = box && vn >= KEY_ID + TAG;
        for (int i = ROW_VECTOR + 1; sealed && i < ROW_VERSION; i++)
            sealed = !ROW[i].content || (st[i + 1] - st[i] == 1 && p[st[i]] == 0);
        if (!coll || !ten || !id || !sealed) { fail("a row holds no sealed content"); goto done; }
        if (!last_id || memcmp(last_id, box, KEY_ID)) {  /* rows of a tenant share a key */
            PyObject *key = open_key(keys, resolve, box, coll, cn, ten, tn);
            if (!key) goto done;
            last_id = box;
            have_key = key != Py_None;
            if (have_key && use_lanes) {  /* the block's checks keep a copy of its S2V key */
                lanes = keyed_lanes((const uint8_t *)PyBytes_AS_STRING(key));
                if (!lanes ||
                    grow((void **)&blk.keys, &blk.cap_keys, blk.nkeys, sizeof(S2vKey), 1))
                    goto done;
                blk.keys[blk.nkeys++] = *lanes->s2v;
            } else if (have_key) {
                tpl = keyed((const uint8_t *)PyBytes_AS_STRING(key), 0);
                if (!tpl) goto done;
            }
        }
        if (!have_key) {  /* the tenant was forgotten: its key is destroyed */
            if (append_int(gone, row)) goto done;
            continue;
        }
        /* the row before its content, then the envelope decrypted behind it */
        size_t head = st[ROW_VECTOR] - st[0], envn = vn - KEY_ID - TAG, aad_at = aads.len;
        size_t len = head + envn + st[ROW_N] - st[ROW_VERSION];
        for (int i = ROW_VECTOR + 1; i < ROW_VERSION; i++)
            if (!ROW[i].content) len += st[i + 1] - st[i];
        if (len > (size_t)into.len - used) { fail("a row does not read as a snapshot record"); goto done; }
        memcpy(out + used, p + st[0], head);
        if (associated(&tail, coll, cn, ten, tn, id, idn) || put(&aads, tail.p, tail.len) ||
            decrypt(&blk, use_lanes ? lanes : NULL, ctx, tpl, &aads, aad_at, box + KEY_ID,
                    vn - KEY_ID, out + used + head) ||
            grow((void **)&blk.rows, &blk.cap_rows, blk.nrows, sizeof(Opening), 0))
            goto done;
        Opening *r = &blk.rows[blk.nrows++];
        r->at = used;
        r->envn = envn;
        memcpy(r->st, st, sizeof st);
        used += len;
    }
    if (blk.ncheck) {
        size_t bad;
        blk.macs = malloc(blk.ncheck * sizeof(Mac));
        if (!blk.macs) { PyErr_NoMemory(); goto done; }
        Py_BEGIN_ALLOW_THREADS
        bad = s2v_check(blk.checks, blk.ncheck, blk.keys, aads.p, blk.macs);
        Py_END_ALLOW_THREADS
        if (bad < blk.ncheck) {
            fail("sealed content does not open (changed, moved, or another key)");
            goto done;
        }
    }
    lengths = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4 * blk.nrows));
    contents = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(4 * blk.nrows));
    hashes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(16 * blk.nrows));
    if (!lengths || !contents || !hashes) goto done;
    for (size_t i = 0; i < blk.nrows; i++) {
        const Opening *r = &blk.rows[i];
        size_t content, len = i + 1 < blk.nrows ? blk.rows[i + 1].at - r->at : used - r->at;
        if (arrange(r, p, out + r->at, &tail, &content)) goto done;
        uint32_t l32 = (uint32_t)len, c32 = (uint32_t)content;  /* little-endian u4 */
        memcpy(PyBytes_AS_STRING(lengths) + 4 * i, &l32, 4);
        memcpy(PyBytes_AS_STRING(contents) + 4 * i, &c32, 4);
        /* as the row index keeps them: xxh3-128 as a little-endian 128-bit number */
        XXH128_hash_t h = XXH3_128bits(out + r->at, content);
        memcpy(PyBytes_AS_STRING(hashes) + 16 * i, &h.low64, 8);
        memcpy(PyBytes_AS_STRING(hashes) + 16 * i + 8, &h.high64, 8);
    }
    result = Py_BuildValue("nOOOO", (Py_ssize_t)used, lengths, contents, hashes, gone);
done:
    Py_XDECREF(lengths);
    Py_XDECREF(contents);
    Py_XDECREF(hashes);
    Py_XDECREF(gone);
    EVP_CIPHER_CTX_free(ctx);
    PyMem_Free(aads.p);
    PyMem_Free(tail.p);
    block_free(&blk);
    PyBuffer_Release(&into);
    PyBuffer_Release(&in);
    return result;
}

/* -- module ------------------------------------------------------------------------------ */
static PyObject *field_table(const Field *fields, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) {
        PyObject *f = Py_BuildValue("(ss)", fields[i].name, fields[i].spelled);
        if (!f) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, i, f);
    }
    return t;
}

static PyObject *set_lanes(PyObject *self, PyObject *arg) {
    int was = lanes_usable(), want = PyObject_IsTrue(arg);
    if (want < 0) return NULL;
    __builtin_cpu_init();
    lanes_on = want && __builtin_cpu_supports("aes");
    return PyBool_FromLong(was);
}

static PyMethodDef METHODS[] = {
    {"seal_record", seal_record, METH_VARARGS, "A change-log record datum, its content sealed."},
    {"open_rows", open_rows, METH_VARARGS, "Snapshot rows with their content opened."},
    {"set_lanes", set_lanes, METH_O, "Whether open_rows checks many rows at once (AES-NI)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "tenantseal", NULL, -1, METHODS,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_tenantseal(void) {
    SIV = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
    CTR = EVP_CIPHER_fetch(NULL, "AES-256-CTR", NULL);
    if (!SIV || !CTR) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no AES-256-SIV or AES-256-CTR");
        return NULL;
    }
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    if (PyModule_AddObject(m, "LOG_FIELDS", field_table(LOG, LOG_N)) ||
        PyModule_AddObject(m, "ROW_FIELDS", field_table(ROW, ROW_N))) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

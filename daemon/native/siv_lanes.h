/* siv_lanes.h: the check half of AES-SIV (RFC 5297) opening, for many records at once, with
 * AES-NI. Part of tenantseal.c (one translation unit).
 *
 * Opening AES-SIV is CTR decryption (parallel inside a record, OpenSSL does it at GB/s) and
 * then S2V over the associated data and the plaintext, to compare with the tag. S2V is CMAC, a
 * CBC-MAC: each 16-byte block waits for the AES of the one before, so one record's S2V runs at
 * the AES instruction's latency, not its throughput (about 850 MB/s here, 4 us for a 768-dim
 * record). The CMACs of different records are independent: mac_many runs LANES of them
 * interleaved, each lane taking the next message when it finishes one, which keeps the AES
 * unit busy (several times the rate on one core). The results are RFC 5297's, bit for bit:
 * tests/unit/test_tenantseal.py holds open_rows to the Python reference (the `cryptography`
 * package's AESSIV) with the lanes on and off.
 *
 * S2V with one associated-data string A and the plaintext P, under K1 (the SIV key's first
 * half), subkeys k1 = dbl(AES(0)) and k2 = dbl(k1):
 *     D = CMAC(0^128);  D = dbl(D) ^ CMAC(A)
 *     V = CMAC(P xorend D)                  when |P| >= 16
 *     V = CMAC(dbl(D) ^ pad(P))             otherwise
 * A message's last one or two blocks are prepared in its job (padding, the xorend, the
 * subkey), so the lanes only ever read whole blocks. */
#include <immintrin.h>
#include <openssl/crypto.h>

#define LANES 8
#define AESNI __attribute__((target("aes")))

typedef struct {
    __m128i rk[15];              /* K1's AES-256 round keys */
    uint8_t k1[16], k2[16];      /* CMAC's subkeys */
    uint8_t dd0[16];             /* dbl(CMAC(0^128)): S2V's first value, doubled */
} S2vKey;

/* One CMAC: `full` blocks read from p, then the prepared last one or two from tail. */
typedef struct {
    const __m128i *rk;
    const uint8_t *p;
    size_t full, total;
    uint8_t tail[32];
    uint8_t *out;
} Mac;

static int lanes_on = -1;  /* -1: not decided yet; set_lanes() turns them off for a test */

static int lanes_usable(void) {
    if (lanes_on < 0) {
        __builtin_cpu_init();
        lanes_on = __builtin_cpu_supports("aes") && !getenv("VECWAL_NO_SIV_LANES");
    }
    return lanes_on;
}

static void dbl(uint8_t out[16], const uint8_t in[16]) {  /* in and out may be one */
    uint8_t carry = in[0] >> 7;
    for (int i = 0; i < 15; i++) out[i] = (uint8_t)((in[i] << 1) | (in[i + 1] >> 7));
    out[15] = (uint8_t)((in[15] << 1) ^ (carry ? 0x87 : 0));
}

AESNI static __m128i kx_even(__m128i k, __m128i assist) {
    assist = _mm_shuffle_epi32(assist, 0xff);
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    return _mm_xor_si128(k, assist);
}

AESNI static __m128i kx_odd(__m128i k, __m128i even) {
    __m128i t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(even, 0), 0xaa);
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
    return _mm_xor_si128(k, t);
}

#define KX(i, rcon)                                                                   \
    rk[i] = kx_even(rk[i - 2], _mm_aeskeygenassist_si128(rk[i - 1], rcon));           \
    if (i < 14) rk[i + 1] = kx_odd(rk[i - 1], rk[i])

AESNI static __m128i aes256(const __m128i *rk, __m128i x) {
    x = _mm_xor_si128(x, rk[0]);
    for (int r = 1; r < 14; r++) x = _mm_aesenc_si128(x, rk[r]);
    return _mm_aesenclast_si128(x, rk[14]);
}

AESNI static void s2v_key(S2vKey *k, const uint8_t *siv_key) {
    __m128i *rk = k->rk;
    rk[0] = _mm_loadu_si128((const __m128i *)siv_key);
    rk[1] = _mm_loadu_si128((const __m128i *)(siv_key + 16));
    KX(2, 0x01); KX(4, 0x02); KX(6, 0x04); KX(8, 0x08); KX(10, 0x10); KX(12, 0x20);
    KX(14, 0x40);
    uint8_t l[16];
    _mm_storeu_si128((__m128i *)l, aes256(rk, _mm_setzero_si128()));
    dbl(k->k1, l);
    dbl(k->k2, k->k1);
    /* CMAC(0^128): one whole block, xored with k1 */
    __m128i d0 = aes256(rk, _mm_loadu_si128((const __m128i *)k->k1));
    _mm_storeu_si128((__m128i *)k->dd0, d0);
    dbl(k->dd0, k->dd0);
}

/* msg (n bytes) as a CMAC job writing its tag to out; xorend (16 bytes, only when n >= 16)
 * is xored into the message's last 16 bytes first. */
static void mac_prepare(Mac *m, const S2vKey *k, const uint8_t *msg, size_t n,
                        const uint8_t *xorend, uint8_t *out) {
    size_t blocks = n ? (n + 15) / 16 : 1, ntail = blocks >= 2 ? 2 : 1;
    size_t first = blocks - ntail, have = n - first * 16;
    int whole = n && n % 16 == 0;
    memset(m->tail, 0, sizeof m->tail);
    memcpy(m->tail, msg + first * 16, have);
    if (!whole) m->tail[have] = 0x80;
    if (xorend)
        for (int i = 0; i < 16; i++) m->tail[have - 16 + (size_t)i] ^= xorend[i];
    uint8_t *last = m->tail + (ntail - 1) * 16;
    const uint8_t *sub = whole ? k->k1 : k->k2;
    for (int i = 0; i < 16; i++) last[i] ^= sub[i];
    m->rk = k->rk;
    m->p = msg;
    m->full = first;
    m->total = blocks;
    m->out = out;
}

/* Every job's CMAC, LANES at a time. */
AESNI static void mac_many(Mac *jobs, size_t n) {
    __m128i st[LANES], x[LANES];
    const __m128i *rk[LANES];
    Mac *job[LANES];
    size_t blk[LANES], next = 0;
    int live = 0;
    if (!n) return;
    for (int l = 0; l < LANES; l++) {
        job[l] = next < n ? &jobs[next++] : NULL;
        rk[l] = jobs[0].rk;  /* an idle lane computes on any key, and is not read */
        if (job[l]) { rk[l] = job[l]->rk; live++; }
        st[l] = _mm_setzero_si128();
        blk[l] = 0;
    }
    while (live) {
        for (int l = 0; l < LANES; l++) {
            const Mac *m = job[l];
            if (!m) { x[l] = rk[l][0]; continue; }
            const uint8_t *src = blk[l] < m->full ? m->p + 16 * blk[l]
                                                  : m->tail + 16 * (blk[l] - m->full);
            x[l] = _mm_xor_si128(_mm_xor_si128(st[l], _mm_loadu_si128((const __m128i *)src)),
                                 rk[l][0]);
        }
        for (int r = 1; r < 14; r++)
            for (int l = 0; l < LANES; l++) x[l] = _mm_aesenc_si128(x[l], rk[l][r]);
        for (int l = 0; l < LANES; l++) x[l] = _mm_aesenclast_si128(x[l], rk[l][14]);
        for (int l = 0; l < LANES; l++) {
            Mac *m = job[l];
            if (!m) continue;
            st[l] = x[l];
            if (++blk[l] < m->total) continue;
            _mm_storeu_si128((__m128i *)m->out, x[l]);
            st[l] = _mm_setzero_si128();
            blk[l] = 0;
            job[l] = next < n ? &jobs[next++] : NULL;
            if (job[l]) rk[l] = job[l]->rk; else live--;
        }
    }
}

/* One record to check: its key, associated data and plaintext, and the tag it came with. */
typedef struct {
    size_t key, aad_at, aad_len;
    const uint8_t *plain;
    size_t plain_len;
    uint8_t tag[16], s1[16], v[16];
} Check;

/* Each check's S2V against its tag: the number of the first that fails, or n. macs holds n
 * jobs; aads is the arena the checks' associated data are in. */
static size_t s2v_check(Check *checks, size_t n, const S2vKey *keys, const uint8_t *aads,
                        Mac *macs) {
    for (size_t i = 0; i < n; i++)
        mac_prepare(&macs[i], &keys[checks[i].key], aads + checks[i].aad_at,
                    checks[i].aad_len, NULL, checks[i].s1);
    mac_many(macs, n);
    for (size_t i = 0; i < n; i++) {
        Check *c = &checks[i];
        const S2vKey *k = &keys[c->key];
        uint8_t d[16];
        for (int j = 0; j < 16; j++) d[j] = k->dd0[j] ^ c->s1[j];
        if (c->plain_len >= 16) {
            mac_prepare(&macs[i], k, c->plain, c->plain_len, d, c->v);
        } else {
            uint8_t t[16] = {0};
            dbl(d, d);
            memcpy(t, c->plain, c->plain_len);
            t[c->plain_len] = 0x80;
            for (int j = 0; j < 16; j++) t[j] ^= d[j];
            mac_prepare(&macs[i], k, t, 16, NULL, c->v);
        }
    }
    mac_many(macs, n);
    for (size_t i = 0; i < n; i++)
        if (CRYPTO_memcmp(checks[i].v, checks[i].tag, 16)) return i;
    return n;
}

/*
 * fedcrypto._native: batch Paillier kernels working directly on the ciphertext limb layout.
 *
 * Layout (the contract shared with libs/accel, see fedcrypto/paillier/limbs.py): a batch of
 * residues is one C-contiguous array of little-endian uint64 limbs, shape (count, L), limb 0
 * least significant. GMP's mp_limb_t is 64 bits without nails on the platforms this builds on
 * (checked below), so a row IS an mpn number and is read through mpz_roinit_n views: no Python
 * object per element. Every kernel takes its output buffer from the caller, works on its whole
 * chunk with the GIL released, and is a pure function of its arguments (no static state), so a
 * ThreadPoolExecutor spreads a batch over cores without copying anything.
 *
 * Two engines compute the same residues:
 *  - scalar GMP (mpz on row views): any modulus, any CPU;
 *  - "m52x8", AVX-512 IFMA Montgomery arithmetic in radix 2^52 with eight independent elements
 *    in the eight 64-bit lanes of a zmm register (lane l holds limb j of element l). Lanes never
 *    exchange carries, so the code reads like scalar CIOS Montgomery multiplication. It runs
 *    only where the CPU has AVX512F + AVX512IFMA (checked at run time) and the modulus is odd;
 *    the caller asks for it with simd=True and may always force the scalar engine.
 * Results are canonical residues in [0, M), so both engines (and the gmpy2 code in
 * kernels.py) agree bit for bit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if GMP_LIMB_BITS != 64 || GMP_NAIL_BITS != 0
#error "fedcrypto._native needs 64-bit GMP limbs without nails"
#endif
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedcrypto._native reads <u8 limb arrays as native words: little-endian hosts only"
#endif

typedef mp_limb_t limb;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FC_IFMA 1
#include <immintrin.h>
#define IFMA_FN __attribute__((target("avx512f,avx512ifma")))
#else
#define FC_IFMA 0
#endif

/* ---------------------------------------------------------------------------------------- */
/* Rows and moduli                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* Write x (0 <= x < 2^(64 width)) into a row of `width` limbs. */
static int row_set(limb *row, size_t width, mpz_srcptr x)
{
    size_t n = mpz_size(x);
    if (n > width)
        return -1;
    if (n)
        memcpy(row, mpz_limbs_read(x), n * sizeof(limb));
    memset(row + n, 0, (width - n) * sizeof(limb));
    return 0;
}

/* Read-only mpz view of a row (GMP normalises the size; the row must outlive the view). */
static inline mpz_srcptr row_view(mpz_t v, const limb *row, size_t width)
{
    return mpz_roinit_n(v, row, (mp_size_t)width);
}

static void mpz_from_le_bytes(mpz_t x, const Py_buffer *b)
{
    mpz_import(x, (size_t)b->len, -1, 1, 0, 0, b->buf);
}

/* Limbs of the residues modulo M as stored (limbs_for in limbs.py: bits of M - 1). */
static size_t limbs_for(mpz_srcptr m)
{
    mpz_t t;
    size_t bits;
    mpz_init(t);
    mpz_sub_ui(t, m, 1);
    bits = mpz_sgn(t) ? mpz_sizeinbase(t, 2) : 0;
    mpz_clear(t);
    return (bits + 63) / 64;
}

/* ---------------------------------------------------------------------------------------- */
/* The m52x8 engine (AVX-512 IFMA)                                                          */
/* ---------------------------------------------------------------------------------------- */

#define MASK52 ((1ULL << 52) - 1)
/* Accumulators are 64-bit; a product column receives at most 4k terms below 2^52, so k must
 * stay below 2^10 for no overflow. 256 limbs = 13,310-bit moduli is far beyond any key here. */
#define M52_MAX_LIMBS 256

/* A modulus for the lane engine. Lane vectors are uint64 arrays [k][8], 64-byte aligned. */
typedef struct {
    int k;            /* radix-2^52 limbs; R = 2^(52k) > 4M so almost-Montgomery stays < 2M */
    size_t L;         /* 64-bit limbs of a residue row */
    uint64_t ninv;    /* -M^-1 mod 2^52 */
    const limb *m64;  /* M as L limbs (points into mpz M) */
    mpz_t M;
    uint64_t *N;      /* M, k radix-52 limbs */
    uint64_t *one;    /* lanes of R mod M (Montgomery 1) */
    uint64_t *rr;     /* lanes of R^2 mod M (into Montgomery form) */
    uint64_t *unit;   /* lanes of 1 (out of Montgomery form) */
    uint64_t *t;      /* scratch: k + 1 vectors */
    limb *row;        /* scratch row, L + 2 limbs */
    mpz_t tmp;
} m52_t;

static int m52_limbs(mpz_srcptr m)
{
    return (int)((mpz_sizeinbase(m, 2) + 2 + 51) / 52);
}

/* Radix conversions (scalar). */
static void to52(uint64_t *dst, size_t dstride, int k, const limb *src, size_t width)
{
    unsigned __int128 acc = 0;
    int nb = 0;
    size_t w = 0;
    for (int j = 0; j < k; j++) {
        if (nb < 52 && w < width) {
            acc |= (unsigned __int128)src[w++] << nb;
            nb += 64;
        }
        dst[(size_t)j * dstride] = (uint64_t)acc & MASK52;
        acc >>= 52;
        nb = nb >= 52 ? nb - 52 : 0;
    }
}

static void from52(limb *dst, size_t width, const uint64_t *src, size_t sstride, int k)
{
    unsigned __int128 acc = 0;
    int nb = 0;
    size_t w = 0;
    for (int j = 0; j < k; j++) {
        acc |= (unsigned __int128)src[(size_t)j * sstride] << nb;
        nb += 52;
        if (nb >= 64) {
            if (w < width)
                dst[w++] = (limb)acc;
            acc >>= 64;
            nb -= 64;
        }
    }
    if (w < width)
        dst[w++] = (limb)acc;
    while (w < width)
        dst[w++] = 0;
}

static void mpz_to_lanes(uint64_t *dst, int k, mpz_srcptr x)
{
    size_t n = mpz_size(x);
    const limb *p = mpz_limbs_read(x);
    for (int l = 0; l < 8; l++)
        to52(dst + l, 8, k, p, n);
}

static void *alloc64(size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    return p;
}

static void m52_free(m52_t *c)
{
    free(c->N);
    free(c->one);
    free(c->rr);
    free(c->unit);
    free(c->t);
    free(c->row);
    mpz_clear(c->M);
    mpz_clear(c->tmp);
}

/* Set up M (odd, > 1); returns 0, or -1 on allocation failure. */
static int m52_init(m52_t *c, mpz_srcptr M)
{
    int k = m52_limbs(M);
    memset(c, 0, sizeof(*c));
    mpz_init_set(c->M, M);
    mpz_init(c->tmp);
    c->k = k;
    c->L = limbs_for(M);
    c->m64 = mpz_limbs_read(c->M);
    c->N = alloc64(sizeof(uint64_t) * (size_t)k);
    c->one = alloc64(64 * (size_t)k);
    c->rr = alloc64(64 * (size_t)k);
    c->unit = alloc64(64 * (size_t)k);
    c->t = alloc64(64 * (size_t)(k + 1));
    c->row = alloc64(sizeof(limb) * (c->L + 2));
    if (!c->N || !c->one || !c->rr || !c->unit || !c->t || !c->row) {
        m52_free(c);
        return -1;
    }
    to52(c->N, 1, k, c->m64, mpz_size(M));
    /* -M^-1 mod 2^64 by Newton's iteration (each step doubles the correct low bits) */
    uint64_t m0 = c->m64[0], inv = m0;
    for (int i = 0; i < 6; i++)
        inv *= 2 - m0 * inv;
    c->ninv = (0 - inv) & MASK52;
    mpz_set_ui(c->tmp, 1);
    mpz_mul_2exp(c->tmp, c->tmp, 52 * (mp_bitcnt_t)k);
    mpz_mod(c->tmp, c->tmp, M);
    mpz_to_lanes(c->one, k, c->tmp);
    mpz_mul(c->tmp, c->tmp, c->tmp);
    mpz_mod(c->tmp, c->tmp, M);
    mpz_to_lanes(c->rr, k, c->tmp);
    memset(c->unit, 0, 64 * (size_t)k);
    for (int l = 0; l < 8; l++)
        c->unit[l] = 1;
    return 0;
}

/* Lane l of lane vector v = the row (any width), reduced modulo M first unless it already is a
 * residue (a row narrower than M's is one). */
static void m52_load_lane(m52_t *c, uint64_t *v, size_t l, const limb *row, size_t width)
{
    size_t L = c->L;
    int reduced = 1;
    for (size_t i = L; i < width; i++)
        if (row[i]) {
            reduced = 0;
            break;
        }
    if (reduced && width >= L && mpn_cmp(row, c->m64, (mp_size_t)L) >= 0)
        reduced = 0;
    if (reduced) {
        to52(v + l, 8, c->k, row, width);
        return;
    }
    mpz_t x;
    mpz_mod(c->tmp, row_view(x, row, width), c->M);
    row_set(c->row, L, c->tmp);
    to52(v + l, 8, c->k, c->row, L);
}

/* Lane l of a [k][8] vector (normalised, value < 2M) as a canonical residue row of L limbs. */
static void m52_store_lane(m52_t *c, limb *out, const uint64_t *v, int l)
{
    size_t L = c->L;
    limb *r = c->row;
    from52(r, L + 2, v + l, 8, c->k);
    while (r[L] || r[L + 1] || mpn_cmp(r, c->m64, (mp_size_t)L) >= 0) {
        limb borrow = mpn_sub_n(r, r, c->m64, (mp_size_t)L);
        mpn_sub_1(r + L, r + L, 2, borrow);
    }
    memcpy(out, r, L * sizeof(limb));
}

#if FC_IFMA

/* r = a * b / R mod M for eight lanes (CIOS, radix 2^52). Inputs below 2M give an output below
 * 2M (R > 4M). r may alias a or b: r is written only after the last read. Accumulator t[j]
 * holds an unnormalised column; a column gets at most 4 terms below 2^52 per outer step and
 * lives for at most k steps, so it stays below 4k 2^52 < 2^64. Only t[0] must be exact modulo
 * 2^52 to pick m, and IFMA reads only the low 52 bits of its multiplicands. */
IFMA_FN static void m52_mul(const m52_t *c, uint64_t *r, const uint64_t *a, const uint64_t *b)
{
    const int k = c->k;
    __m512i *t = (__m512i *)c->t;
    const __m512i *A = (const __m512i *)a, *B = (const __m512i *)b;
    const __m512i z = _mm512_setzero_si512();
    const __m512i ninv = _mm512_set1_epi64((long long)c->ninv);
    const __m512i mask = _mm512_set1_epi64((long long)MASK52);
    const uint64_t *N = c->N;
    for (int j = 0; j <= k; j++)
        t[j] = z;
    for (int i = 0; i < k; i++) {
        __m512i ai = _mm512_load_si512(A + i);
        __m512i n0 = _mm512_set1_epi64((long long)N[0]);
        __m512i t0 = _mm512_madd52lo_epu64(t[0], ai, B[0]);
        __m512i m = _mm512_madd52lo_epu64(z, t0, ninv);
        t0 = _mm512_madd52lo_epu64(t0, m, n0);
        __m512i hb = _mm512_srli_epi64(t0, 52);
        hb = _mm512_madd52hi_epu64(hb, ai, B[0]);
        hb = _mm512_madd52hi_epu64(hb, m, n0);
        for (int j = 1; j < k; j++) {
            __m512i nj = _mm512_set1_epi64((long long)N[j]);
            __m512i v = _mm512_add_epi64(t[j], hb);
            v = _mm512_madd52lo_epu64(v, ai, B[j]);
            v = _mm512_madd52lo_epu64(v, m, nj);
            t[j - 1] = v;
            hb = _mm512_madd52hi_epu64(z, ai, B[j]);
            hb = _mm512_madd52hi_epu64(hb, m, nj);
        }
        t[k - 1] = _mm512_add_epi64(t[k], hb);
        t[k] = z;
    }
    __m512i cy = z;
    __m512i *R = (__m512i *)r;
    for (int j = 0; j < k; j++) {
        __m512i v = _mm512_add_epi64(t[j], cy);
        R[j] = _mm512_and_si512(v, mask);
        cy = _mm512_srli_epi64(v, 52);
    }
}

/* dst[j] (lanes) = table[(idx[l] * k + j)] for a [entries][k] radix-52 table. */
IFMA_FN static void m52_gather(uint64_t *dst, const uint64_t *table, const int64_t idx[8], int k)
{
    int64_t start[8];
    for (int l = 0; l < 8; l++)
        start[l] = idx[l] * k;
    __m512i base = _mm512_loadu_si512(start);
    const __m512i one = _mm512_set1_epi64(1);
    __m512i *D = (__m512i *)dst;
    for (int j = 0; j < k; j++) {
        D[j] = _mm512_i64gather_epi64(base, (const void *)table, 8);
        base = _mm512_add_epi64(base, one);
    }
}

/* dst (lanes) = for lane l, T[d[l]] where T is [entries][k][8] in lane form. */
IFMA_FN static void m52_select(uint64_t *dst, const uint64_t *T, const int64_t d[8], int k)
{
    int64_t start[8];
    for (int l = 0; l < 8; l++)
        start[l] = d[l] * 8 * k + l;
    __m512i base = _mm512_loadu_si512(start);
    const __m512i step = _mm512_set1_epi64(8);
    __m512i *D = (__m512i *)dst;
    for (int j = 0; j < k; j++) {
        D[j] = _mm512_i64gather_epi64(base, (const void *)T, 8);
        base = _mm512_add_epi64(base, step);
    }
}

/* For lane l, T[d[l]] = src (inverse of m52_select). Lanes must name distinct slots, which they
 * do: the lane is part of every address. */
IFMA_FN static void m52_scatter(uint64_t *T, const uint64_t *src, const int64_t d[8], int k)
{
    int64_t start[8];
    for (int l = 0; l < 8; l++)
        start[l] = d[l] * 8 * k + l;
    __m512i base = _mm512_loadu_si512(start);
    const __m512i step = _mm512_set1_epi64(8);
    const __m512i *S = (const __m512i *)src;
    for (int j = 0; j < k; j++) {
        _mm512_i64scatter_epi64((void *)T, base, S[j], 8);
        base = _mm512_add_epi64(base, step);
    }
}

/* dst (lanes) = for lane l, (neg bit l ? b : a) where a and b are single residues in radix 2^52
 * (k limbs each), i.e. every lane gets the same value up to the choice. */
IFMA_FN static void m52_broadcast_choice(uint64_t *dst, const uint64_t *a, const uint64_t *b,
                                         __mmask8 neg, int k)
{
    __m512i *D = (__m512i *)dst;
    for (int j = 0; j < k; j++)
        D[j] = _mm512_mask_blend_epi64(neg, _mm512_set1_epi64((long long)a[j]),
                                       _mm512_set1_epi64((long long)b[j]));
}

static int cpu_has_ifma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
}

#else
static int cpu_has_ifma(void) { return 0; }
#endif

/* ---------------------------------------------------------------------------------------- */
/* Exponents                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* Bits [pos, pos + w) of a little-endian byte string (w <= 16). */
static inline unsigned digit_at(const uint8_t *e, size_t len, size_t pos, int w)
{
    size_t byte = pos >> 3;
    unsigned shift = (unsigned)(pos & 7);
    uint32_t v = 0;
    for (int i = 0; i < 3; i++)
        if (byte + (size_t)i < len)
            v |= (uint32_t)e[byte + (size_t)i] << (8 * i);
    return (v >> shift) & ((1u << w) - 1);
}

static size_t bit_length(const uint8_t *e, size_t len)
{
    while (len && e[len - 1] == 0)
        len--;
    if (!len)
        return 0;
    size_t bits = 8 * (len - 1);
    uint8_t top = e[len - 1];
    while (top) {
        bits++;
        top >>= 1;
    }
    return bits;
}

/* Fixed window for `bits`-bit exponents: squarings are fixed, so minimise bits/w + 2^w. */
static int choose_window(size_t bits)
{
    int best = 1;
    size_t best_cost = (size_t)-1;
    for (int w = 1; w <= 7; w++) {
        size_t cost = (bits + (size_t)w - 1) / (size_t)w + ((size_t)1 << w);
        if (cost < best_cost) {
            best_cost = cost;
            best = w;
        }
    }
    return best;
}

/* ---------------------------------------------------------------------------------------- */
/* Kernels (pure C; called with the GIL released)                                           */
/* ---------------------------------------------------------------------------------------- */

typedef enum {
    FC_OK = 0,
    FC_NOMEM = 1,
    FC_NOT_INVERTIBLE = 2,
    FC_OVERFLOW = 3,
    FC_NO_INVERSE = 4,
    FC_EXPONENT_TOO_BIG = 5,
} fc_status;

static int use_simd(int simd, mpz_srcptr M)
{
    return simd && cpu_has_ifma() && mpz_odd_p(M) && mpz_cmp_ui(M, 1) > 0 &&
           m52_limbs(M) <= M52_MAX_LIMBS;
}

/* out[i] = a[i] * b[i] mod M. */
static fc_status k_mulmod(limb *out, const limb *a, const limb *b, size_t count, size_t L,
                          mpz_srcptr M, int simd)
{
#if FC_IFMA
    if (use_simd(simd, M)) {
        m52_t c;
        if (m52_init(&c, M))
            return FC_NOMEM;
        int k = c.k;
        uint64_t *va = alloc64(64 * (size_t)k), *vb = alloc64(64 * (size_t)k);
        if (!va || !vb) {
            free(va);
            free(vb);
            m52_free(&c);
            return FC_NOMEM;
        }
        for (size_t g = 0; g < count; g += 8) {
            size_t n = count - g < 8 ? count - g : 8;
            memset(va, 0, 64 * (size_t)k);
            memset(vb, 0, 64 * (size_t)k);
            for (size_t l = 0; l < n; l++) {
                m52_load_lane(&c, va, l, a + (g + l) * L, L);
                m52_load_lane(&c, vb, l, b + (g + l) * L, L);
            }
            /* (a b / R) R^2 / R = a b */
            m52_mul(&c, va, va, vb);
            m52_mul(&c, va, va, c.rr);
            for (size_t l = 0; l < n; l++)
                m52_store_lane(&c, out + (g + l) * L, va, (int)l);
        }
        free(va);
        free(vb);
        m52_free(&c);
        return FC_OK;
    }
#endif
    mpz_t x, va, vb;
    mpz_init(x);
    for (size_t i = 0; i < count; i++) {
        mpz_mul(x, row_view(va, a + i * L, L), row_view(vb, b + i * L, L));
        mpz_mod(x, x, M);
        row_set(out + i * L, L, x);
    }
    mpz_clear(x);
    return FC_OK;
}

/* out[i] = base[i]^e_i mod M with e_i = exps[shared ? 0 : i] (little-endian bytes); bases may
 * be wider than M's rows (they are reduced first). */
static fc_status k_powmod(limb *out, size_t L, const limb *base, size_t Lb, size_t count,
                          const uint8_t *exps, size_t ew, int shared, mpz_srcptr M, int simd)
{
#if FC_IFMA
    if (use_simd(simd, M)) {
        m52_t c;
        if (m52_init(&c, M))
            return FC_NOMEM;
        const int k = c.k;
        const size_t kv = 8 * (size_t)k;
        size_t maxbits = 0;
        for (size_t i = 0; i < (shared ? 1 : count); i++) {
            size_t b = bit_length(exps + i * ew, ew);
            if (b > maxbits)
                maxbits = b;
        }
        const int w = choose_window(maxbits);
        const size_t entries = (size_t)1 << w;
        uint64_t *T = alloc64(8 * kv * entries), *acc = alloc64(8 * kv), *B = alloc64(8 * kv);
        if (!T || !acc || !B) {
            free(T);
            free(acc);
            free(B);
            m52_free(&c);
            return FC_NOMEM;
        }
        for (size_t g = 0; g < count; g += 8) {
            size_t n = count - g < 8 ? count - g : 8;
            const uint8_t *e[8];
            size_t bits = 0;
            memset(acc, 0, 8 * kv);
            for (size_t l = 0; l < 8; l++) {
                size_t i = g + (l < n ? l : 0);
                e[l] = exps + (shared ? 0 : i * ew);
                if (l < n) {
                    m52_load_lane(&c, acc, l, base + (g + l) * Lb, Lb);
                    size_t b = bit_length(e[l], ew);
                    if (b > bits)
                        bits = b;
                }
            }
            /* table of Montgomery powers x^d R, d < 2^w */
            memcpy(T, c.one, 8 * kv);
            if (entries > 1)
                m52_mul(&c, T + kv, acc, c.rr);
            for (size_t d = 2; d < entries; d++)
                m52_mul(&c, T + d * kv, T + (d - 1) * kv, T + kv);
            size_t windows = (bits + (size_t)w - 1) / (size_t)w;
            memcpy(acc, c.one, 8 * kv);
            for (size_t win = windows; win-- > 0;) {
                if (win + 1 != windows)
                    for (int s = 0; s < w; s++)
                        m52_mul(&c, acc, acc, acc); /* a dedicated square measured slower */
                if (shared) {
                    unsigned d = digit_at(e[0], ew, win * (size_t)w, w);
                    if (win + 1 == windows)
                        memcpy(acc, T + d * kv, 8 * kv);
                    else if (d)
                        m52_mul(&c, acc, acc, T + d * kv);
                } else {
                    int64_t d[8];
                    for (int l = 0; l < 8; l++)
                        d[l] = digit_at(e[l], ew, win * (size_t)w, w);
                    if (win + 1 == windows) {
                        m52_select(acc, T, d, k);
                    } else {
                        m52_select(B, T, d, k);
                        m52_mul(&c, acc, acc, B);
                    }
                }
            }
            m52_mul(&c, acc, acc, c.unit);
            for (size_t l = 0; l < n; l++)
                m52_store_lane(&c, out + (g + l) * L, acc, (int)l);
        }
        free(T);
        free(acc);
        free(B);
        m52_free(&c);
        return FC_OK;
    }
#endif
    mpz_t x, e, vb;
    mpz_init(x);
    mpz_init(e);
    for (size_t i = 0; i < count; i++) {
        if (i == 0 || !shared)
            mpz_import(e, ew, -1, 1, 0, 0, exps + (shared ? 0 : i * ew));
        mpz_powm(x, row_view(vb, base + i * Lb, Lb), e, M);
        row_set(out + i * L, L, x);
    }
    mpz_clear(x);
    mpz_clear(e);
    return FC_OK;
}

/* Fixed-base exponentiation: out[i] = prod_j T[j][digit_j(e_i)] mod M, T given as
 * (positions << w, L) rows; table52 (same entries in radix 2^52, k per entry) enables the
 * lane engine. */
static fc_status k_fixed_base(limb *out, size_t L, const limb *table, const uint64_t *table52,
                              int window, size_t positions, size_t count, const uint8_t *exps,
                              size_t ew, mpz_srcptr M, int simd)
{
#if FC_IFMA
    if (table52 && use_simd(simd, M)) {
        m52_t c;
        if (m52_init(&c, M))
            return FC_NOMEM;
        const int k = c.k;
        const size_t kv = 8 * (size_t)k;
        uint64_t *acc = alloc64(8 * kv), *B = alloc64(8 * kv), *start = alloc64(8 * kv);
        if (!acc || !B || !start) {
            free(acc);
            free(B);
            free(start);
            m52_free(&c);
            return FC_NOMEM;
        }
        /* The entries are in normal form, so each product divides by R: start from R^P mod M
         * and the P products leave exactly prod T mod M (below 2M). */
        mpz_set_ui(c.tmp, 1);
        mpz_mul_2exp(c.tmp, c.tmp, 52 * (mp_bitcnt_t)k);
        mpz_mod(c.tmp, c.tmp, M);
        mpz_powm_ui(c.tmp, c.tmp, (unsigned long)positions, M);
        mpz_to_lanes(start, k, c.tmp);
        for (size_t g = 0; g < count; g += 8) {
            size_t n = count - g < 8 ? count - g : 8;
            const uint8_t *e[8];
            for (size_t l = 0; l < 8; l++)
                e[l] = exps + (g + (l < n ? l : 0)) * ew;
            memcpy(acc, start, 8 * kv);
            int64_t idx[8], next[8];
            for (int l = 0; l < 8; l++)
                next[l] = digit_at(e[l], ew, 0, window);
            for (size_t pos = 0; pos < positions; pos++) {
                memcpy(idx, next, sizeof(idx));
                if (pos + 1 < positions) {
                    /* the table is far bigger than the caches: fetch the next entries early */
                    for (int l = 0; l < 8; l++) {
                        next[l] = (int64_t)(((pos + 1) << window) +
                                            digit_at(e[l], ew, (pos + 1) * (size_t)window, window));
                        const char *entry = (const char *)(table52 + (size_t)next[l] * (size_t)k);
                        for (size_t off = 0; off < 8 * (size_t)k; off += 64)
                            __builtin_prefetch(entry + off);
                    }
                }
                m52_gather(B, table52, idx, k);
                m52_mul(&c, acc, acc, B);
            }
            for (size_t l = 0; l < n; l++)
                m52_store_lane(&c, out + (g + l) * L, acc, (int)l);
        }
        free(acc);
        free(B);
        free(start);
        m52_free(&c);
        return FC_OK;
    }
#else
    (void)table52;
#endif
    mpz_t acc, v;
    mpz_init(acc);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *e = exps + i * ew;
        int started = 0;
        for (size_t pos = 0; pos < positions; pos++) {
            unsigned d = digit_at(e, ew, pos * (size_t)window, window);
            if (!d)
                continue;
            const limb *entry = table + ((pos << window) + d) * L;
            if (!started) {
                mpz_set(acc, row_view(v, entry, L));
                started = 1;
            } else {
                mpz_mul(acc, acc, row_view(v, entry, L));
                mpz_mod(acc, acc, M);
            }
        }
        if (!started)
            mpz_set_ui(acc, 1);
        row_set(out + i * L, L, acc);
    }
    mpz_clear(acc);
    return FC_OK;
}

/* out = op + p2 ((oq - op) p2inv mod q2): the residue mod p2 q2 that is op mod p2, oq mod q2. */
static fc_status k_crt(limb *out, size_t L, const limb *xp, size_t Lp, const limb *xq, size_t Lq,
                       size_t count, mpz_srcptr p2, mpz_srcptr q2, mpz_srcptr p2inv)
{
    mpz_t t, vp, vq;
    mpz_init(t);
    fc_status st = FC_OK;
    for (size_t i = 0; i < count; i++) {
        mpz_srcptr a = row_view(vp, xp + i * Lp, Lp), b = row_view(vq, xq + i * Lq, Lq);
        mpz_sub(t, b, a);
        mpz_mul(t, t, p2inv);
        mpz_mod(t, t, q2);
        mpz_mul(t, t, p2);
        mpz_add(t, t, a);
        if (row_set(out + i * L, L, t)) {
            st = FC_OVERFLOW;
            break;
        }
    }
    mpz_clear(t);
    return st;
}

/* Encryption from obfuscators: out = (1 + m n) r mod n^2 = r + n (m r mod n), reduced; with no
 * obfuscators, out = 1 + m n. Also Enc(x) -> Enc(x + m) when r holds ciphertexts. */
static fc_status k_apply_plain(limb *out, size_t L, const limb *plain, size_t Lm, const limb *r,
                               size_t count, mpz_srcptr n, mpz_srcptr n2)
{
    mpz_t t, vm, vr;
    mpz_init(t);
    fc_status st = FC_OK;
    for (size_t i = 0; i < count; i++) {
        mpz_srcptr m = row_view(vm, plain + i * Lm, Lm);
        if (r) {
            mpz_srcptr x = row_view(vr, r + i * L, L);
            mpz_mul(t, m, x);
            mpz_mod(t, t, n);
            mpz_mul(t, t, n);
            mpz_add(t, t, x);
            if (mpz_cmp(t, n2) >= 0) /* below 2 n^2 for r < n^2: one subtraction, as kernels.py */
                mpz_sub(t, t, n2);
        } else {
            mpz_mul(t, m, n);
            mpz_add_ui(t, t, 1);
            mpz_mod(t, t, n2);
        }
        if (row_set(out + i * L, L, t)) {
            st = FC_OVERFLOW;
            break;
        }
    }
    mpz_clear(t);
    return st;
}

/* Inverses of all rows modulo M with one modular inversion (Montgomery's trick). */
static fc_status k_invert(limb *out, const limb *a, size_t count, size_t L, mpz_srcptr M)
{
    if (!count)
        return FC_OK;
    limb *prefix = malloc(sizeof(limb) * L * count);
    if (!prefix)
        return FC_NOMEM;
    mpz_t acc, inv, t, v;
    mpz_init(acc);
    mpz_init(inv);
    mpz_init(t);
    fc_status st = FC_OK;
    mpz_mod(acc, row_view(v, a, L), M);
    row_set(prefix, L, acc);
    for (size_t i = 1; i < count; i++) {
        mpz_mul(acc, acc, row_view(v, a + i * L, L));
        mpz_mod(acc, acc, M);
        row_set(prefix + i * L, L, acc);
    }
    if (!mpz_invert(inv, acc, M)) {
        st = FC_NOT_INVERTIBLE;
    } else {
        for (size_t i = count - 1; i > 0; i--) {
            mpz_mul(t, inv, row_view(v, prefix + (i - 1) * L, L));
            mpz_mod(t, t, M);
            row_set(out + i * L, L, t);
            mpz_mul(inv, inv, row_view(v, a + i * L, L));
            mpz_mod(inv, inv, M);
        }
        row_set(out, L, inv);
    }
    mpz_clear(acc);
    mpz_clear(inv);
    mpz_clear(t);
    free(prefix);
    return st;
}

/* CRT decryption (as phe): m_p = L_p(c^(p-1) mod p^2) hp mod p, likewise for q,
 * m = m_p + p ((m_q - m_p) p^-1 mod q). */
static fc_status k_decrypt(limb *out, size_t Lout, const limb *c, size_t Lc, size_t count,
                           mpz_srcptr p, mpz_srcptr q, mpz_srcptr hp, mpz_srcptr hq,
                           mpz_srcptr pinv, int simd)
{
    mpz_t p2, q2, e;
    mpz_init(p2);
    mpz_init(q2);
    mpz_init(e);
    mpz_mul(p2, p, p);
    mpz_mul(q2, q, q);
    size_t Lp = limbs_for(p2), Lq = limbs_for(q2);
    limb *xp = malloc(sizeof(limb) * Lp * (count ? count : 1));
    limb *xq = malloc(sizeof(limb) * Lq * (count ? count : 1));
    fc_status st = FC_OK;
    if (!xp || !xq) {
        st = FC_NOMEM;
        goto done;
    }
    size_t ew;
    uint8_t *eb;
    /* exponent p - 1 then q - 1, as little-endian bytes */
    mpz_sub_ui(e, p, 1);
    ew = (mpz_sizeinbase(e, 2) + 7) / 8;
    eb = calloc(ew ? ew : 1, 1);
    if (!eb) {
        st = FC_NOMEM;
        goto done;
    }
    mpz_export(eb, NULL, -1, 1, 0, 0, e);
    st = k_powmod(xp, Lp, c, Lc, count, eb, ew, 1, p2, simd);
    free(eb);
    if (st)
        goto done;
    mpz_sub_ui(e, q, 1);
    ew = (mpz_sizeinbase(e, 2) + 7) / 8;
    eb = calloc(ew ? ew : 1, 1);
    if (!eb) {
        st = FC_NOMEM;
        goto done;
    }
    mpz_export(eb, NULL, -1, 1, 0, 0, e);
    st = k_powmod(xq, Lq, c, Lc, count, eb, ew, 1, q2, simd);
    free(eb);
    if (st)
        goto done;
    {
        mpz_t mp, mq, v;
        mpz_init(mp);
        mpz_init(mq);
        for (size_t i = 0; i < count; i++) {
            mpz_sub_ui(mp, row_view(v, xp + i * Lp, Lp), 1);
            mpz_fdiv_q(mp, mp, p);
            mpz_mul(mp, mp, hp);
            mpz_mod(mp, mp, p);
            mpz_sub_ui(mq, row_view(v, xq + i * Lq, Lq), 1);
            mpz_fdiv_q(mq, mq, q);
            mpz_mul(mq, mq, hq);
            mpz_mod(mq, mq, q);
            mpz_sub(mq, mq, mp);
            mpz_mul(mq, mq, pinv);
            mpz_mod(mq, mq, q);
            mpz_mul(mq, mq, p);
            mpz_add(mq, mq, mp);
            if (row_set(out + i * Lout, Lout, mq)) {
                st = FC_OVERFLOW;
                break;
            }
        }
        mpz_clear(mp);
        mpz_clear(mq);
    }
done:
    free(xp);
    free(xq);
    mpz_clear(p2);
    mpz_clear(q2);
    mpz_clear(e);
    return st;
}


/* Buckets cost of the multi-exponentiation below: windows * (bases + 2^(w+1)). */
static int multiexp_window(size_t count, int bits)
{
    int best = 1;
    double best_cost = 1e300;
    for (int w = 1; w <= 12 && w <= (bits > 0 ? bits : 1); w++) {
        double windows = (double)((bits + w - 1) / w);
        double cost = windows * ((double)count + (double)(2u << w)) + (double)bits;
        if (cost < best_cost) {
            best_cost = cost;
            best = w;
        }
    }
    return best;
}

/* Magnitudes of the exponents; -1 when some |e| >= 2^62, -2 when a negative exponent has no
 * inverse row (a missing or all-zero one). */
static int multiexp_bits(const int64_t *e, size_t m, size_t cols, const limb *inv, size_t L)
{
    uint64_t top = 0;
    for (size_t i = 0; i < m; i++) {
        int need_inverse = 0;
        for (size_t j = 0; j < cols; j++) {
            int64_t v = e[i * cols + j];
            uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            if (mag >= (1ULL << 62))
                return -1;
            if (v < 0)
                need_inverse = 1;
            top |= mag;
        }
        if (need_inverse) {
            if (!inv || mpn_zero_p(inv + i * L, (mp_size_t)L))
                return -2;
        }
    }
    int bits = 0;
    while (top) {
        bits++;
        top >>= 1;
    }
    return bits;
}

/* out[j] = prod_i base_i^e[i][j] mod M for each of `cols` columns of e (int64, m x cols, row
 * major), with inverse rows standing in for negative exponents: Pippenger's bucket method. In
 * each w-bit window every base with a non-zero digit d goes into bucket d; the buckets are
 * folded as prod_d B_d^d with a running product; windows are joined by w squarings. */
static fc_status k_multiexp(limb *out, size_t L, const limb *bases, const limb *inv, size_t m,
                            const int64_t *e, size_t cols, mpz_srcptr M, int simd)
{
    int bits = multiexp_bits(e, m, cols, inv, L);
    if (bits == -1)
        return FC_EXPONENT_TOO_BIG;
    if (bits == -2)
        return FC_NO_INVERSE;
    const int w = multiexp_window(m, bits);
    const size_t nb = (size_t)1 << w;
    const size_t windows = bits ? (size_t)(bits + w - 1) / (size_t)w : 0;
    const uint64_t mask = nb - 1;
#if FC_IFMA
    if (use_simd(simd, M)) {
        m52_t c;
        if (m52_init(&c, M))
            return FC_NOMEM;
        const int k = c.k;
        const size_t kv = 8 * (size_t)k;
        /* bases and inverses in Montgomery form, one radix-2^52 row each */
        uint64_t *mb = alloc64(8 * (size_t)k * (m ? m : 1));
        uint64_t *mi = alloc64(8 * (size_t)k * (m ? m : 1));
        uint64_t *buckets = alloc64(8 * kv * nb);
        uint64_t *x = alloc64(8 * kv), *acc = alloc64(8 * kv), *run = alloc64(8 * kv),
                 *tot = alloc64(8 * kv), *b = alloc64(8 * kv);
        if (!mb || !mi || !buckets || !x || !acc || !run || !tot || !b) {
            free(mb), free(mi), free(buckets), free(x), free(acc), free(run), free(tot), free(b);
            m52_free(&c);
            return FC_NOMEM;
        }
        for (int pass = 0; pass < 2; pass++) {
            const limb *src = pass ? inv : bases;
            uint64_t *dst = pass ? mi : mb;
            if (!src) {
                memset(dst, 0, 8 * (size_t)k * m);
                continue;
            }
            for (size_t g = 0; g < m; g += 8) {
                size_t n = m - g < 8 ? m - g : 8;
                memset(x, 0, 8 * kv);
                for (size_t l = 0; l < n; l++)
                    m52_load_lane(&c, x, l, src + (g + l) * L, L);
                m52_mul(&c, x, x, c.rr);
                for (size_t l = 0; l < n; l++)
                    for (int j = 0; j < k; j++)
                        dst[(g + l) * (size_t)k + (size_t)j] = x[(size_t)j * 8 + l];
            }
        }
        for (size_t g = 0; g < cols; g += 8) {
            size_t n = cols - g < 8 ? cols - g : 8;
            memcpy(acc, c.one, 8 * kv);
            for (size_t win = windows; win-- > 0;) {
                if (win + 1 != windows)
                    for (int s = 0; s < w; s++)
                        m52_mul(&c, acc, acc, acc); /* a dedicated square measured slower */
                for (size_t d = 0; d < nb; d++)
                    memcpy(buckets + d * kv, c.one, 8 * kv);
                for (size_t i = 0; i < m; i++) {
                    int64_t d[8];
                    __mmask8 neg = 0;
                    int any = 0;
                    for (size_t l = 0; l < 8; l++) {
                        int64_t v = l < n ? e[i * cols + g + l] : 0;
                        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
                        d[l] = (int64_t)((mag >> (win * (size_t)w)) & mask);
                        if (v < 0)
                            neg |= (__mmask8)(1u << l);
                        any |= d[l] != 0;
                    }
                    if (!any)
                        continue;
                    /* a lane with digit 0 multiplies bucket 0, which the fold never reads */
                    m52_broadcast_choice(x, mb + i * (size_t)k, mi + i * (size_t)k, neg, k);
                    m52_select(b, buckets, d, k);
                    m52_mul(&c, b, b, x);
                    m52_scatter(buckets, b, d, k);
                }
                memcpy(run, c.one, 8 * kv);
                memcpy(tot, c.one, 8 * kv);
                for (size_t d = nb - 1; d >= 1; d--) {
                    m52_mul(&c, run, run, buckets + d * kv);
                    m52_mul(&c, tot, tot, run);
                }
                m52_mul(&c, acc, acc, tot);
            }
            m52_mul(&c, acc, acc, c.unit);
            for (size_t l = 0; l < n; l++)
                m52_store_lane(&c, out + (g + l) * L, acc, (int)l);
        }
        free(mb), free(mi), free(buckets), free(x), free(acc), free(run), free(tot), free(b);
        m52_free(&c);
        return FC_OK;
    }
#endif
    mpz_t *bk = malloc(sizeof(mpz_t) * nb);
    if (!bk)
        return FC_NOMEM;
    for (size_t d = 0; d < nb; d++)
        mpz_init(bk[d]);
    mpz_t acc, run, tot, v;
    mpz_init(acc);
    mpz_init(run);
    mpz_init(tot);
    for (size_t j = 0; j < cols; j++) {
        mpz_set_ui(acc, 1);
        for (size_t win = windows; win-- > 0;) {
            if (win + 1 != windows)
                mpz_powm_ui(acc, acc, (unsigned long)nb, M);
            for (size_t d = 0; d < nb; d++)
                mpz_set_ui(bk[d], 1);
            for (size_t i = 0; i < m; i++) {
                int64_t ev = e[i * cols + j];
                uint64_t mag = ev < 0 ? (uint64_t)0 - (uint64_t)ev : (uint64_t)ev;
                uint64_t d = (mag >> (win * (size_t)w)) & mask;
                if (!d)
                    continue;
                const limb *row = (ev < 0 ? inv : bases) + i * L;
                mpz_mul(bk[d], bk[d], row_view(v, row, L));
                mpz_mod(bk[d], bk[d], M);
            }
            mpz_set_ui(run, 1);
            mpz_set_ui(tot, 1);
            for (size_t d = nb - 1; d >= 1; d--) {
                mpz_mul(run, run, bk[d]);
                mpz_mod(run, run, M);
                mpz_mul(tot, tot, run);
                mpz_mod(tot, tot, M);
            }
            mpz_mul(acc, acc, tot);
            mpz_mod(acc, acc, M);
        }
        mpz_mod(acc, acc, M);
        row_set(out + j * L, L, acc);
    }
    for (size_t d = 0; d < nb; d++)
        mpz_clear(bk[d]);
    free(bk);
    mpz_clear(acc);
    mpz_clear(run);
    mpz_clear(tot);
    return FC_OK;
}

/* Products of consecutive runs of rows (run lengths given; an empty run gives 1). */
static fc_status k_prod_segments(limb *out, const limb *a, size_t L, const int64_t *lengths,
                                 size_t segments, mpz_srcptr M)
{
    mpz_t acc, v;
    mpz_init(acc);
    size_t pos = 0;
    for (size_t s = 0; s < segments; s++) {
        size_t len = (size_t)lengths[s];
        if (!len) {
            mpz_set_ui(acc, 1);
        } else {
            mpz_set(acc, row_view(v, a + pos * L, L));
            for (size_t i = 1; i < len; i++) {
                mpz_mul(acc, acc, row_view(v, a + (pos + i) * L, L));
                mpz_mod(acc, acc, M);
            }
        }
        pos += len;
        if (row_set(out + s * L, L, acc)) {
            mpz_clear(acc);
            return FC_OVERFLOW;
        }
    }
    mpz_clear(acc);
    return FC_OK;
}

/* Fixed-base table in radix 2^52 (k limbs per entry) for the lane engine. */
static void k_prepare_table(uint64_t *out, int k, const limb *table, size_t entries, size_t L)
{
    for (size_t i = 0; i < entries; i++)
        to52(out + i * (size_t)k, 1, k, table + i * L, L);
}

/* ---------------------------------------------------------------------------------------- */
/* Ciphertext screening for the audit (fedcrypto.audit_scan)                                */
/* ---------------------------------------------------------------------------------------- */

/* BLAKE2b (RFC 7693), unkeyed, 16-byte digests: the same bytes as Python's
 * hashlib.blake2b(row, digest_size=16), so the digests the audit stores for repeat detection
 * (fedaudit's audit_ciphertext_digests) do not depend on which path computed them. */
static const uint64_t b2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t b2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int r) { return (x >> r) | (x << (64 - r)); }

#define B2B_G(a, b, c, d, x, y)                                                                 \
    do {                                                                                        \
        v[a] = v[a] + v[b] + (x);                                                               \
        v[d] = rotr64(v[d] ^ v[a], 32);                                                         \
        v[c] = v[c] + v[d];                                                                     \
        v[b] = rotr64(v[b] ^ v[c], 24);                                                         \
        v[a] = v[a] + v[b] + (y);                                                               \
        v[d] = rotr64(v[d] ^ v[a], 16);                                                         \
        v[c] = v[c] + v[d];                                                                     \
        v[b] = rotr64(v[b] ^ v[c], 63);                                                         \
    } while (0)

/* One compression of a 128-byte block (m: 16 little-endian words); t: bytes so far. */
static void b2b_compress(uint64_t h[8], const uint64_t m[16], uint64_t t, int last)
{
    uint64_t v[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = b2b_iv[i];
    }
    v[12] ^= t; /* inputs here stay far below 2^64 bytes: the high counter word is 0 */
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = b2b_sigma[r];
        B2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* out (16 bytes) = BLAKE2b-128 of len bytes at data. Little-endian host (checked at the top),
 * so message words are read with memcpy. */
static void blake2b_16(uint8_t out[16], const uint8_t *data, size_t len)
{
    uint64_t h[8], m[16];
    memcpy(h, b2b_iv, sizeof(h));
    h[0] ^= 0x01010000ULL ^ 16; /* fanout 1, depth 1, no key, digest length 16 */
    size_t done = 0;
    while (len - done > 128) { /* the last block (full or not) is compressed with `last` set */
        memcpy(m, data + done, 128);
        done += 128;
        b2b_compress(h, m, (uint64_t)done, 0);
    }
    memset(m, 0, sizeof(m));
    memcpy(m, data + done, len - done);
    b2b_compress(h, m, (uint64_t)len, 1);
    memcpy(out, h, 16);
}

#if FC_IFMA
#define B2B_G8(a, b, c, d, x, y)                                                                \
    do {                                                                                        \
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), (x));                             \
        v[d] = _mm512_ror_epi64(_mm512_xor_si512(v[d], v[a]), 32);                              \
        v[c] = _mm512_add_epi64(v[c], v[d]);                                                    \
        v[b] = _mm512_ror_epi64(_mm512_xor_si512(v[b], v[c]), 24);                              \
        v[a] = _mm512_add_epi64(_mm512_add_epi64(v[a], v[b]), (y));                             \
        v[d] = _mm512_ror_epi64(_mm512_xor_si512(v[d], v[a]), 16);                              \
        v[c] = _mm512_add_epi64(v[c], v[d]);                                                    \
        v[b] = _mm512_ror_epi64(_mm512_xor_si512(v[b], v[c]), 63);                              \
    } while (0)

/* BLAKE2b-128 of eight rows of len bytes at once, row l in lane l (AVX-512F): the same
 * compression as blake2b_16, each 64-bit word of the state a vector of eight. Rows of one
 * batch have one length, so the byte counter and the last-block flag are shared. A block's
 * words are first copied into msg[word][lane] (zero beyond a row's end; lanes >= rows unused). */
__attribute__((target("avx512f"))) static void blake2b_16x8(uint8_t *out, const uint8_t *data,
                                                            size_t len, size_t rows)
{
    __m512i h[8], v[16], m[16];
    uint64_t msg[16][8] __attribute__((aligned(64)));
    for (int i = 0; i < 8; i++)
        h[i] = _mm512_set1_epi64((long long)b2b_iv[i]);
    h[0] = _mm512_xor_si512(h[0], _mm512_set1_epi64(0x01010000LL ^ 16));
    size_t done = 0;
    do {
        size_t take = len - done > 128 ? 128 : len - done;
        int last = done + take == len;
        memset(msg, 0, sizeof(msg));
        for (size_t l = 0; l < rows; l++) {
            uint64_t words[16] = {0};
            memcpy(words, data + l * len + done, take);
            for (int w = 0; w < 16; w++)
                msg[w][l] = words[w];
        }
        done += take;
        for (int w = 0; w < 16; w++)
            m[w] = _mm512_load_si512(msg[w]);
        for (int i = 0; i < 8; i++) {
            v[i] = h[i];
            v[i + 8] = _mm512_set1_epi64((long long)b2b_iv[i]);
        }
        v[12] = _mm512_xor_si512(v[12], _mm512_set1_epi64((long long)done));
        if (last)
            v[14] = _mm512_xor_si512(v[14], _mm512_set1_epi64(-1));
        for (int r = 0; r < 12; r++) {
            const uint8_t *s = b2b_sigma[r];
            B2B_G8(0, 4, 8, 12, m[s[0]], m[s[1]]);
            B2B_G8(1, 5, 9, 13, m[s[2]], m[s[3]]);
            B2B_G8(2, 6, 10, 14, m[s[4]], m[s[5]]);
            B2B_G8(3, 7, 11, 15, m[s[6]], m[s[7]]);
            B2B_G8(0, 5, 10, 15, m[s[8]], m[s[9]]);
            B2B_G8(1, 6, 11, 12, m[s[10]], m[s[11]]);
            B2B_G8(2, 7, 8, 13, m[s[12]], m[s[13]]);
            B2B_G8(3, 4, 9, 14, m[s[14]], m[s[15]]);
        }
        for (int i = 0; i < 8; i++)
            h[i] = _mm512_xor_si512(h[i], _mm512_xor_si512(v[i], v[i + 8]));
    } while (done < len);
    uint64_t h0[8] __attribute__((aligned(64))), h1[8] __attribute__((aligned(64)));
    _mm512_store_si512(h0, h[0]);
    _mm512_store_si512(h1, h[1]);
    for (size_t l = 0; l < rows; l++) {
        memcpy(out + 16 * l, &h0[l], 8);
        memcpy(out + 16 * l + 8, &h1[l], 8);
    }
}

static int cpu_has_avx512f(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#endif

/* For every row: its BLAKE2b-128 digest (digests: count * 16 bytes), whether it equals 1, and
 * whether it lies outside (0, top). Limb comparisons only, no conversion of any row. With simd
 * (and AVX-512F), the digests of each full group of eight rows are computed together. */
static void k_scan_rows(uint8_t *digests, size_t *trivial, size_t *outside, const limb *rows,
                        size_t count, size_t L, mpz_srcptr top, int simd)
{
    const limb *bound = mpz_limbs_read(top);
    size_t bl = mpz_size(top);
    size_t one = 0, out = 0;
    size_t hashed = 0;
#if FC_IFMA
    if (simd && cpu_has_avx512f())
        for (; hashed + 8 <= count; hashed += 8)
            blake2b_16x8(digests + 16 * hashed, (const uint8_t *)(rows + hashed * L),
                         L * sizeof(limb), 8);
#endif
    for (size_t i = 0; i < count; i++) {
        const limb *r = rows + i * L;
        if (i >= hashed)
            blake2b_16(digests + 16 * i, (const uint8_t *)r, L * sizeof(limb));
        size_t rl = L; /* significant limbs of the row */
        while (rl && !r[rl - 1])
            rl--;
        one += rl == 1 && r[0] == 1;
        out += rl == 0 || rl > bl || (rl == bl && mpn_cmp(r, bound, (mp_size_t)rl) >= 0);
    }
    *trivial = one;
    *outside = out;
}

/* Montgomery reduction of t (tl limbs, plus a zero limb at t[tl] for the carry) by the k-limb
 * odd modulus n, tl > k: out (k limbs) = t * 2^(-64 (tl - k)) mod n up to a multiple of n,
 * out < 2^(64 k). Each step zeroes the lowest limb: t += m n 2^(64 i) with m = t[i] ninv, so the
 * quotient after tl - k steps is exact; it is < 2^(64 k) + n (t < 2^(64 tl)), and when it
 * reaches 2^(64 k) one subtraction of n brings it below. t is clobbered. */
static void redc(limb *out, limb *t, size_t tl, const limb *n, size_t k, limb ninv)
{
    for (size_t i = 0; i + k < tl; i++) {
        limb c = mpn_addmul_1(t + i, n, (mp_size_t)k, t[i] * ninv);
        for (size_t j = i + k; c; j++) { /* j stays <= tl: the sum is below 2^(64 (tl + 1)) */
            t[j] += c;
            c = t[j] < c;
        }
    }
    limb *q = t + (tl - k);
    if (q[k])
        mpn_sub_n(q, q, n, (mp_size_t)k); /* the borrow cancels q[k] */
    memcpy(out, q, k * sizeof(limb));
}

/* g = gcd(prod rows mod n, n), n odd and > 1. The product is carried in Montgomery style: each
 * row is reduced to k limbs by redc (a factor 2^(-64 j) with it), then multiplied into the
 * accumulator and reduced again. Every factor dropped or added is a power of 2, a unit mod an
 * odd n, so the accumulator is (prod rows) * unit mod n and has the same gcd with n; values are
 * only kept below 2^(64 k), not reduced, until the one mpz_mod before the gcd. */
#if FC_IFMA
/* r = a / R mod M for eight lanes: m52_mul(a, 1) without its products by the zero limbs of 1
 * (half the multiply-adds). For any a < R the result is below M + 1 (a / R + M), so r < 2M. */
IFMA_FN static void m52_redc(const m52_t *c, uint64_t *r, const uint64_t *a)
{
    const int k = c->k;
    __m512i *t = (__m512i *)c->t;
    const __m512i *A = (const __m512i *)a;
    const __m512i z = _mm512_setzero_si512();
    const __m512i ninv = _mm512_set1_epi64((long long)c->ninv);
    const __m512i mask = _mm512_set1_epi64((long long)MASK52);
    const uint64_t *N = c->N;
    for (int j = 0; j <= k; j++)
        t[j] = z;
    for (int i = 0; i < k; i++) {
        __m512i n0 = _mm512_set1_epi64((long long)N[0]);
        __m512i t0 = _mm512_add_epi64(t[0], _mm512_load_si512(A + i));
        __m512i m = _mm512_madd52lo_epu64(z, t0, ninv);
        t0 = _mm512_madd52lo_epu64(t0, m, n0);
        __m512i hb = _mm512_srli_epi64(t0, 52);
        hb = _mm512_madd52hi_epu64(hb, m, n0);
        for (int j = 1; j < k; j++) {
            __m512i nj = _mm512_set1_epi64((long long)N[j]);
            t[j - 1] = _mm512_madd52lo_epu64(_mm512_add_epi64(t[j], hb), m, nj);
            hb = _mm512_madd52hi_epu64(z, m, nj);
        }
        t[k - 1] = _mm512_add_epi64(t[k], hb);
        t[k] = z;
    }
    __m512i cy = z;
    __m512i *R = (__m512i *)r;
    for (int j = 0; j < k; j++) {
        __m512i v = _mm512_add_epi64(t[j], cy);
        R[j] = _mm512_and_si512(v, mask);
        cy = _mm512_srli_epi64(v, 52);
    }
}

/* The lane engine's product: eight running products, one per lane, of the rows taken eight at a
 * time. A row c (at most 52k + bits(n) - 1 bits, checked by the caller) is split as
 * c = lo + hi R with lo < R = 2^(52k) and hi < n; then c / R = lo / R + hi (mod n), and
 * m52_redc(lo) = lo / R (mod n) is below n + 1 (lo < R), so r = lo / R + hi < 2n is a valid
 * m52_mul input, and acc = acc r / R stays below 2n. Padding lanes carry 1. Every factor of R
 * dropped is a unit mod odd n: gcd(prod of the lanes' acc, n) = gcd(prod rows, n). */
IFMA_FN static fc_status m52_product_gcd(mpz_t g, const limb *rows, size_t count, size_t L,
                                         mpz_srcptr n)
{
    m52_t c;
    if (m52_init(&c, n))
        return FC_NOMEM;
    const int k = c.k;
    uint64_t *T = alloc64(64 * (size_t)(2 * k)), *acc = alloc64(64 * (size_t)k);
    if (!T || !acc) {
        free(T);
        free(acc);
        m52_free(&c);
        return FC_NOMEM;
    }
    memcpy(acc, c.one, 64 * (size_t)k);
    const __m512i mask = _mm512_set1_epi64((long long)MASK52);
    __m512i *lo = (__m512i *)T, *hi = lo + k;
    for (size_t at = 0; at < count; at += 8) {
        size_t lanes = count - at < 8 ? count - at : 8;
        memset(T, 0, 64 * (size_t)(2 * k));
        for (size_t l = 0; l < 8; l++) {
            if (l < lanes)
                to52(T + l, 8, 2 * k, rows + (at + l) * L, L);
            else
                T[l] = 1;
        }
        m52_redc(&c, T, T); /* lo / R mod n, below n + 1 */
        __m512i cy = _mm512_setzero_si512();
        for (int j = 0; j < k; j++) { /* lo = lo / R + hi, normalised (below 2n < R) */
            __m512i v = _mm512_add_epi64(_mm512_add_epi64(lo[j], hi[j]), cy);
            lo[j] = _mm512_and_si512(v, mask);
            cy = _mm512_srli_epi64(v, 52);
        }
        m52_mul(&c, acc, acc, T);
    }
    mpz_t prod;
    mpz_init_set_ui(prod, 1);
    limb *row = malloc(sizeof(limb) * (c.L + 2));
    if (!row) {
        mpz_clear(prod);
        free(T);
        free(acc);
        m52_free(&c);
        return FC_NOMEM;
    }
    for (int l = 0; l < 8; l++) {
        m52_store_lane(&c, row, acc, l);
        mpz_t v;
        mpz_mul(prod, prod, row_view(v, row, c.L));
        mpz_mod(prod, prod, n);
    }
    mpz_gcd(g, prod, n);
    mpz_clear(prod);
    free(row);
    free(T);
    free(acc);
    m52_free(&c);
    return FC_OK;
}
#endif

static fc_status k_product_gcd(mpz_t g, const limb *rows, size_t count, size_t L, mpz_srcptr n,
                               int simd)
{
#if FC_IFMA
    /* The lane engine takes rows up to 52k + bits(n) - 1 bits (so that hi < n, above). */
    if (use_simd(simd, n) && 64 * L <= 52 * (size_t)m52_limbs(n) + mpz_sizeinbase(n, 2) - 1)
        return m52_product_gcd(g, rows, count, L, n);
#endif
    size_t k = mpz_size(n);
    const limb *np = mpz_limbs_read(n);
    limb inv = np[0]; /* Newton: each step doubles the correct low bits of n^-1 mod 2^64 */
    for (int i = 0; i < 6; i++)
        inv *= 2 - np[0] * inv;
    limb ninv = -inv;
    size_t tl = L > k ? L : k;
    limb *t = malloc(sizeof(limb) * (2 * k + tl + 1));
    limb *acc = malloc(sizeof(limb) * k);
    limb *r = malloc(sizeof(limb) * k);
    if (!t || !acc || !r) {
        free(t);
        free(acc);
        free(r);
        return FC_NOMEM;
    }
    memset(acc, 0, k * sizeof(limb));
    acc[0] = 1;
    for (size_t i = 0; i < count; i++) {
        const limb *row = rows + i * L;
        if (L > k) {
            memcpy(t, row, L * sizeof(limb));
            t[L] = 0;
            redc(r, t, L, np, k, ninv);
        } else {
            memcpy(r, row, L * sizeof(limb));
            memset(r + L, 0, (k - L) * sizeof(limb));
        }
        mpn_mul_n(t, acc, r, (mp_size_t)k);
        t[2 * k] = 0;
        redc(acc, t, 2 * k, np, k, ninv);
    }
    mpz_t a, v;
    mpz_init_set(v, mpz_roinit_n(a, acc, (mp_size_t)k));
    mpz_mod(v, v, n);
    mpz_gcd(g, v, n);
    mpz_clear(v);
    free(t);
    free(acc);
    free(r);
    return FC_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Python bindings                                                                          */
/* ---------------------------------------------------------------------------------------- */

static int raise_status(fc_status st)
{
    switch (st) {
    case FC_OK:
        return 0;
    case FC_NOMEM:
        PyErr_NoMemory();
        return -1;
    case FC_NOT_INVERTIBLE:
        PyErr_SetString(PyExc_ZeroDivisionError, "a value is not invertible");
        return -1;
    case FC_OVERFLOW:
        PyErr_SetString(PyExc_ValueError, "a value does not fit in its row of limbs");
        return -1;
    case FC_NO_INVERSE:
        PyErr_SetString(PyExc_ValueError, "a base has a negative exponent but no inverse");
        return -1;
    case FC_EXPONENT_TOO_BIG:
        PyErr_SetString(PyExc_ValueError, "multi-exponentiation exponents must stay below 2^62");
        return -1;
    }
    return -1;
}

/* Check that a buffer holds `rows` rows of `width` limbs (or bytes when unit == 1). */
static int check_rows(const Py_buffer *b, size_t rows, size_t width, size_t unit, const char *name)
{
    if ((size_t)b->len != rows * width * unit) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zu bytes, got %zd", name,
                     rows * width * unit, b->len);
        return -1;
    }
    return 0;
}

static size_t rows_of(const Py_buffer *b, size_t width, size_t unit)
{
    return width ? (size_t)b->len / (width * unit) : 0;
}

static int mod_from(mpz_t m, const Py_buffer *b, size_t L)
{
    mpz_from_le_bytes(m, b);
    if (mpz_cmp_ui(m, 1) <= 0) {
        PyErr_SetString(PyExc_ValueError, "the modulus must exceed 1");
        return -1;
    }
    if (limbs_for(m) != L) {
        PyErr_Format(PyExc_ValueError, "rows of %zu limbs do not match the modulus (%zu)", L,
                     limbs_for(m));
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(mulmod_doc, "mulmod(out, a, b, modulus, limbs, simd): out[i] = a[i] * b[i] mod M.");

static PyObject *py_mulmod(PyObject *self, PyObject *args)
{
    Py_buffer out, a, b, mb;
    Py_ssize_t L;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*y*y*np", &out, &a, &b, &mb, &L, &simd))
        return NULL;
    PyObject *res = NULL;
    mpz_t M;
    mpz_init(M);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (L < 1 || mod_from(M, &mb, (size_t)L) || check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&a, count, (size_t)L, 8, "a") || check_rows(&b, count, (size_t)L, 8, "b"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_mulmod(out.buf, a.buf, b.buf, count, (size_t)L, M, simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(M);
    PyBuffer_Release(&out);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(powmod_doc,
             "powmod(out, limbs, base, base_limbs, exps, exp_bytes, modulus, simd):\n"
             "out[i] = base[i]^e mod M, e = exps row i (or row 0 when exps has one row).");

static PyObject *py_powmod(PyObject *self, PyObject *args)
{
    Py_buffer out, base, ex, mb;
    Py_ssize_t L, Lb, ew;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*ny*ny*p", &out, &L, &base, &Lb, &ex, &ew, &mb, &simd))
        return NULL;
    PyObject *res = NULL;
    mpz_t M;
    mpz_init(M);
    size_t count = rows_of(&out, (size_t)L, 8);
    size_t erows = rows_of(&ex, (size_t)ew, 1);
    if (L < 1 || Lb < 1 || ew < 1 || mod_from(M, &mb, (size_t)L) ||
        check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&base, count, (size_t)Lb, 8, "base"))
        goto done;
    if (!(erows == 1 || erows == count) || check_rows(&ex, erows, (size_t)ew, 1, "exps"))
        goto done_err;
    fc_status st;
    int shared = erows == 1;
    Py_BEGIN_ALLOW_THREADS
    st = k_powmod(out.buf, (size_t)L, base.buf, (size_t)Lb, count, ex.buf, (size_t)ew, shared, M,
                  simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
    goto done;
done_err:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "exps must have one row or one row per base");
done:
    mpz_clear(M);
    PyBuffer_Release(&out);
    PyBuffer_Release(&base);
    PyBuffer_Release(&ex);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(fixed_base_doc,
             "fixed_base(out, limbs, table, table52, window, positions, exps, exp_bytes, modulus,"
             " simd):\nout[i] = prod_j table[(j << window) + digit_j(exps[i])] mod M; table52"
             " (from prepare_table, or None) enables the SIMD engine.");

static PyObject *py_fixed_base(PyObject *self, PyObject *args)
{
    Py_buffer out, table, t52 = {0}, ex, mb;
    PyObject *t52obj;
    Py_ssize_t L, window, positions, ew;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*Onny*ny*p", &out, &L, &table, &t52obj, &window, &positions,
                          &ex, &ew, &mb, &simd))
        return NULL;
    PyObject *res = NULL;
    int have52 = 0;
    mpz_t M;
    mpz_init(M);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (t52obj != Py_None) {
        if (PyObject_GetBuffer(t52obj, &t52, PyBUF_SIMPLE))
            goto done;
        have52 = 1;
    }
    if (window < 1 || window > 16 || positions < 1 || ew < 1) {
        PyErr_SetString(PyExc_ValueError, "bad window, positions or exponent width");
        goto done;
    }
    if ((size_t)ew * 8 > (size_t)window * (size_t)positions + 7) {
        PyErr_SetString(PyExc_ValueError, "exponents are longer than the table covers");
        goto done;
    }
    if (L < 1 || mod_from(M, &mb, (size_t)L) || check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&table, (size_t)positions << window, (size_t)L, 8, "table") ||
        check_rows(&ex, count, (size_t)ew, 1, "exps"))
        goto done;
    if (have52 && check_rows(&t52, (size_t)positions << window, (size_t)m52_limbs(M), 8, "table52"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_fixed_base(out.buf, (size_t)L, table.buf, have52 ? t52.buf : NULL, (int)window,
                      (size_t)positions, count, ex.buf, (size_t)ew, M, simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(M);
    if (have52)
        PyBuffer_Release(&t52);
    PyBuffer_Release(&out);
    PyBuffer_Release(&table);
    PyBuffer_Release(&ex);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(prepare_table_doc,
             "prepare_table(table, limbs, modulus) -> bytearray: fixed-base table entries in "
             "radix 2^52 (table52_limbs(modulus) uint64 per entry) for the SIMD engine.");

static PyObject *py_prepare_table(PyObject *self, PyObject *args)
{
    Py_buffer table, mb;
    Py_ssize_t L;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ny*", &table, &L, &mb))
        return NULL;
    PyObject *res = NULL;
    mpz_t M;
    mpz_init(M);
    if (L < 1 || mod_from(M, &mb, (size_t)L))
        goto done;
    size_t entries = rows_of(&table, (size_t)L, 8);
    if (check_rows(&table, entries, (size_t)L, 8, "table"))
        goto done;
    int k = m52_limbs(M);
    res = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(entries * (size_t)k * 8));
    if (!res)
        goto done;
    uint64_t *dst = (uint64_t *)PyByteArray_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    k_prepare_table(dst, k, table.buf, entries, (size_t)L);
    Py_END_ALLOW_THREADS
done:
    mpz_clear(M);
    PyBuffer_Release(&table);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(crt_doc,
             "crt(out, limbs, xp, p_limbs, xq, q_limbs, p2, q2, p2_inverse): residues mod "
             "p2 q2 from residues mod p2 and mod q2 (Garner).");

static PyObject *py_crt(PyObject *self, PyObject *args)
{
    Py_buffer out, xp, xq, p2b, q2b, ib;
    Py_ssize_t L, Lp, Lq;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*ny*ny*y*y*", &out, &L, &xp, &Lp, &xq, &Lq, &p2b, &q2b, &ib))
        return NULL;
    PyObject *res = NULL;
    mpz_t p2, q2, inv;
    mpz_init(p2);
    mpz_init(q2);
    mpz_init(inv);
    mpz_from_le_bytes(p2, &p2b);
    mpz_from_le_bytes(q2, &q2b);
    mpz_from_le_bytes(inv, &ib);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (L < 1 || Lp < 1 || Lq < 1 || mpz_sgn(q2) <= 0 ||
        check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&xp, count, (size_t)Lp, 8, "xp") || check_rows(&xq, count, (size_t)Lq, 8, "xq"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_crt(out.buf, (size_t)L, xp.buf, (size_t)Lp, xq.buf, (size_t)Lq, count, p2, q2, inv);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(p2);
    mpz_clear(q2);
    mpz_clear(inv);
    PyBuffer_Release(&out);
    PyBuffer_Release(&xp);
    PyBuffer_Release(&xq);
    PyBuffer_Release(&p2b);
    PyBuffer_Release(&q2b);
    PyBuffer_Release(&ib);
    return res;
}

PyDoc_STRVAR(apply_plain_doc,
             "apply_plain(out, limbs, plain, plain_limbs, r, n): out = (1 + m n) r mod n^2 "
             "row-wise, or 1 + m n when r is None.");

static PyObject *py_apply_plain(PyObject *self, PyObject *args)
{
    Py_buffer out, plain, rb = {0}, nb;
    PyObject *robj;
    Py_ssize_t L, Lm;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*nOy*", &out, &L, &plain, &Lm, &robj, &nb))
        return NULL;
    PyObject *res = NULL;
    int have_r = 0;
    mpz_t n, n2;
    mpz_init(n);
    mpz_init(n2);
    mpz_from_le_bytes(n, &nb);
    mpz_mul(n2, n, n);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (robj != Py_None) {
        if (PyObject_GetBuffer(robj, &rb, PyBUF_SIMPLE))
            goto done;
        have_r = 1;
    }
    if (mpz_cmp_ui(n, 1) <= 0 || L < 1 || Lm < 1 || limbs_for(n2) != (size_t)L) {
        PyErr_SetString(PyExc_ValueError, "bad modulus or row width");
        goto done;
    }
    if (check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&plain, count, (size_t)Lm, 8, "plain") ||
        (have_r && check_rows(&rb, count, (size_t)L, 8, "r")))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_apply_plain(out.buf, (size_t)L, plain.buf, (size_t)Lm, have_r ? rb.buf : NULL, count, n,
                       n2);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(n);
    mpz_clear(n2);
    if (have_r)
        PyBuffer_Release(&rb);
    PyBuffer_Release(&out);
    PyBuffer_Release(&plain);
    PyBuffer_Release(&nb);
    return res;
}

PyDoc_STRVAR(invert_doc, "invert(out, a, modulus, limbs): out[i] = a[i]^-1 mod M (batched); "
                         "ZeroDivisionError when some row is not invertible.");

static PyObject *py_invert(PyObject *self, PyObject *args)
{
    Py_buffer out, a, mb;
    Py_ssize_t L;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*y*n", &out, &a, &mb, &L))
        return NULL;
    PyObject *res = NULL;
    mpz_t M;
    mpz_init(M);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (L < 1 || mod_from(M, &mb, (size_t)L) || check_rows(&out, count, (size_t)L, 8, "out") ||
        check_rows(&a, count, (size_t)L, 8, "a"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_invert(out.buf, a.buf, count, (size_t)L, M);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(M);
    PyBuffer_Release(&out);
    PyBuffer_Release(&a);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(decrypt_doc,
             "decrypt(out, limbs, c, c_limbs, p, q, hp, hq, p_inverse, simd): plaintext residues "
             "of ciphertext rows by CRT (phe's hp, hq).");

static PyObject *py_decrypt(PyObject *self, PyObject *args)
{
    Py_buffer out, c, pb, qb, hpb, hqb, ib;
    Py_ssize_t L, Lc;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*ny*y*y*y*y*p", &out, &L, &c, &Lc, &pb, &qb, &hpb, &hqb, &ib,
                          &simd))
        return NULL;
    PyObject *res = NULL;
    mpz_t p, q, hp, hq, inv, n;
    mpz_init(p);
    mpz_init(q);
    mpz_init(hp);
    mpz_init(hq);
    mpz_init(inv);
    mpz_init(n);
    mpz_from_le_bytes(p, &pb);
    mpz_from_le_bytes(q, &qb);
    mpz_from_le_bytes(hp, &hpb);
    mpz_from_le_bytes(hq, &hqb);
    mpz_from_le_bytes(inv, &ib);
    mpz_mul(n, p, q);
    size_t count = rows_of(&out, (size_t)L, 8);
    if (mpz_cmp_ui(p, 2) <= 0 || mpz_cmp_ui(q, 2) <= 0 || L < 1 || Lc < 1 ||
        limbs_for(n) != (size_t)L) {
        PyErr_SetString(PyExc_ValueError, "bad primes or row width");
        goto done;
    }
    if (check_rows(&out, count, (size_t)L, 8, "out") || check_rows(&c, count, (size_t)Lc, 8, "c"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_decrypt(out.buf, (size_t)L, c.buf, (size_t)Lc, count, p, q, hp, hq, inv, simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(p);
    mpz_clear(q);
    mpz_clear(hp);
    mpz_clear(hq);
    mpz_clear(inv);
    mpz_clear(n);
    PyBuffer_Release(&out);
    PyBuffer_Release(&c);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&qb);
    PyBuffer_Release(&hpb);
    PyBuffer_Release(&hqb);
    PyBuffer_Release(&ib);
    return res;
}

PyDoc_STRVAR(multiexp_doc,
             "multiexp(out, limbs, bases, inverses, exps, modulus, simd): out[j] = prod_i "
             "bases[i]^exps[i, j] mod M for int64 exps (m, cols); inverse rows (or None) serve "
             "negative exponents.");

static PyObject *py_multiexp(PyObject *self, PyObject *args)
{
    Py_buffer out, bases, ib = {0}, ex, mb;
    PyObject *iobj;
    Py_ssize_t L;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*ny*Oy*y*p", &out, &L, &bases, &iobj, &ex, &mb, &simd))
        return NULL;
    PyObject *res = NULL;
    int have_inv = 0;
    mpz_t M;
    mpz_init(M);
    size_t cols = rows_of(&out, (size_t)L, 8);
    size_t m = rows_of(&bases, (size_t)L, 8);
    if (iobj != Py_None) {
        if (PyObject_GetBuffer(iobj, &ib, PyBUF_SIMPLE))
            goto done;
        have_inv = 1;
    }
    if (L < 1 || mod_from(M, &mb, (size_t)L) || check_rows(&out, cols, (size_t)L, 8, "out") ||
        check_rows(&bases, m, (size_t)L, 8, "bases") ||
        (have_inv && check_rows(&ib, m, (size_t)L, 8, "inverses")) ||
        check_rows(&ex, m, cols, 8, "exps"))
        goto done;
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_multiexp(out.buf, (size_t)L, bases.buf, have_inv ? ib.buf : NULL, m, ex.buf, cols, M,
                    simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(M);
    if (have_inv)
        PyBuffer_Release(&ib);
    PyBuffer_Release(&out);
    PyBuffer_Release(&bases);
    PyBuffer_Release(&ex);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(prod_segments_doc,
             "prod_segments(out, a, lengths, modulus, limbs): products mod M of consecutive runs "
             "of rows of a (int64 run lengths; an empty run gives 1).");

static PyObject *py_prod_segments(PyObject *self, PyObject *args)
{
    Py_buffer out, a, lb, mb;
    Py_ssize_t L;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*y*y*n", &out, &a, &lb, &mb, &L))
        return NULL;
    PyObject *res = NULL;
    mpz_t M;
    mpz_init(M);
    size_t segs = rows_of(&out, (size_t)L, 8);
    size_t rows = rows_of(&a, (size_t)L, 8);
    if (L < 1 || mod_from(M, &mb, (size_t)L) || check_rows(&out, segs, (size_t)L, 8, "out") ||
        check_rows(&a, rows, (size_t)L, 8, "a") || check_rows(&lb, segs, 1, 8, "lengths"))
        goto done;
    {
        const int64_t *len = lb.buf;
        size_t total = 0;
        for (size_t i = 0; i < segs; i++) {
            if (len[i] < 0) {
                PyErr_SetString(PyExc_ValueError, "negative run length");
                goto done;
            }
            total += (size_t)len[i];
        }
        if (total != rows) {
            PyErr_SetString(PyExc_ValueError, "run lengths do not add up to the rows");
            goto done;
        }
    }
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_prod_segments(out.buf, a.buf, (size_t)L, lb.buf, segs, M);
    Py_END_ALLOW_THREADS
    if (!raise_status(st))
        res = Py_NewRef(Py_None);
done:
    mpz_clear(M);
    PyBuffer_Release(&out);
    PyBuffer_Release(&a);
    PyBuffer_Release(&lb);
    PyBuffer_Release(&mb);
    return res;
}

PyDoc_STRVAR(scan_rows_doc,
             "scan_rows(digests, rows, limbs, top, simd) -> (equal_to_1, outside): BLAKE2b-128 of "
             "each row into digests (rows * 16 bytes; = hashlib.blake2b(row, digest_size=16); "
             "eight rows at a time with simd on AVX-512F), and how many rows equal 1 and how many "
             "lie outside (0, top) (top: little-endian bytes).");

static PyObject *py_scan_rows(PyObject *self, PyObject *args)
{
    Py_buffer out, a, tb;
    Py_ssize_t L;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*ny*p", &out, &a, &L, &tb, &simd))
        return NULL;
    PyObject *res = NULL;
    mpz_t top;
    mpz_init(top);
    mpz_from_le_bytes(top, &tb);
    size_t count = rows_of(&a, (size_t)L, 8);
    if (L < 1 || check_rows(&a, count, (size_t)L, 8, "rows") ||
        check_rows(&out, count, 16, 1, "digests"))
        goto done;
    size_t trivial, outside;
    Py_BEGIN_ALLOW_THREADS
    k_scan_rows(out.buf, &trivial, &outside, a.buf, count, (size_t)L, top, simd);
    Py_END_ALLOW_THREADS
    res = Py_BuildValue("nn", (Py_ssize_t)trivial, (Py_ssize_t)outside);
done:
    mpz_clear(top);
    PyBuffer_Release(&out);
    PyBuffer_Release(&a);
    PyBuffer_Release(&tb);
    return res;
}

PyDoc_STRVAR(product_gcd_doc,
             "product_gcd(rows, limbs, n, simd) -> bytes: gcd(product of the rows mod n, n) as "
             "little-endian bytes, n odd and > 1 (one gcd for a batch: 1 exactly when every row "
             "is coprime to n).");

static PyObject *py_product_gcd(PyObject *self, PyObject *args)
{
    Py_buffer a, nb;
    Py_ssize_t L;
    int simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*ny*p", &a, &L, &nb, &simd))
        return NULL;
    PyObject *res = NULL;
    mpz_t n, g;
    mpz_init(n);
    mpz_init(g);
    mpz_from_le_bytes(n, &nb);
    size_t count = rows_of(&a, (size_t)L, 8);
    if (L < 1 || check_rows(&a, count, (size_t)L, 8, "rows"))
        goto done;
    if (mpz_cmp_ui(n, 1) <= 0 || mpz_even_p(n)) {
        PyErr_SetString(PyExc_ValueError, "n must be odd and exceed 1");
        goto done;
    }
    fc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = k_product_gcd(g, a.buf, count, (size_t)L, n, simd);
    Py_END_ALLOW_THREADS
    if (!raise_status(st)) {
        size_t bytes = (mpz_sizeinbase(g, 2) + 7) / 8;
        res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bytes);
        if (res)
            mpz_export(PyBytes_AS_STRING(res), NULL, -1, 1, 0, 0, g);
    }
done:
    mpz_clear(n);
    mpz_clear(g);
    PyBuffer_Release(&a);
    PyBuffer_Release(&nb);
    return res;
}

PyDoc_STRVAR(table52_limbs_doc, "table52_limbs(modulus) -> int: radix-2^52 limbs per entry.");

static PyObject *py_table52_limbs(PyObject *self, PyObject *args)
{
    Py_buffer mb;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &mb))
        return NULL;
    mpz_t M;
    mpz_init(M);
    mpz_from_le_bytes(M, &mb);
    long k = m52_limbs(M);
    mpz_clear(M);
    PyBuffer_Release(&mb);
    return PyLong_FromLong(k);
}

PyDoc_STRVAR(simd_supported_doc,
             "simd_supported() -> bool: this CPU runs the AVX-512 IFMA engine.");

static PyObject *py_simd_supported(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyBool_FromLong(cpu_has_ifma());
}

static PyMethodDef methods[] = {
    {"mulmod", py_mulmod, METH_VARARGS, mulmod_doc},
    {"powmod", py_powmod, METH_VARARGS, powmod_doc},
    {"fixed_base", py_fixed_base, METH_VARARGS, fixed_base_doc},
    {"prepare_table", py_prepare_table, METH_VARARGS, prepare_table_doc},
    {"crt", py_crt, METH_VARARGS, crt_doc},
    {"apply_plain", py_apply_plain, METH_VARARGS, apply_plain_doc},
    {"invert", py_invert, METH_VARARGS, invert_doc},
    {"decrypt", py_decrypt, METH_VARARGS, decrypt_doc},
    {"multiexp", py_multiexp, METH_VARARGS, multiexp_doc},
    {"prod_segments", py_prod_segments, METH_VARARGS, prod_segments_doc},
    {"scan_rows", py_scan_rows, METH_VARARGS, scan_rows_doc},
    {"product_gcd", py_product_gcd, METH_VARARGS, product_gcd_doc},
    {"table52_limbs", py_table52_limbs, METH_VARARGS, table52_limbs_doc},
    {"simd_supported", py_simd_supported, METH_NOARGS, simd_supported_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    "fedcrypto._native",
    "Batch Paillier kernels on the contiguous limb layout (GMP, AVX-512 IFMA); GIL released.",
    0,
    methods,
    slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModuleDef_Init(&moduledef);
}

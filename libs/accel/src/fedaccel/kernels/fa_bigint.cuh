// Multi-precision integer arithmetic on 32-bit limbs, one thread per big integer.
//
// Layout: a big integer of L limbs is `u32 x[L]`, limb 0 least significant (the little-endian
// u32 view of the uint64 ciphertext layout shared with fedcrypto). All routines are templates
// over the limb count L so that inner loops unroll with constant indices and the accumulator
// can live in registers.
//
// Montgomery arithmetic uses R = 2^(32 L) for an odd modulus m < R and
// minv = -m^(-1) mod 2^32. Every routine returns fully reduced values (< m), so results are
// canonical and therefore bit-identical to any other exact implementation (the numpy
// reference in fedaccel/reference.py runs the same CIOS schedule on the host).
//
// The same source compiles three ways:
//   * NVRTC via cupy.RawModule (__CUDACC_RTC__), the production path;
//   * nvcc (__CUDACC__), used by the compile check in tests/accel;
//   * a host C++ compiler (neither macro), used by fedaccel.host_runtime to run the very same
//     kernels on the CPU when no GPU is present. Host mode emulates threadIdx/blockIdx with
//     globals set by the caller before each "thread" runs.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FA_HD __device__ __forceinline__
#define FA_KERNEL extern "C" __global__ void
#define FA_UNROLL _Pragma("unroll")
#define FA_CLZ(x) __clz((int)(x))
#else
#define FA_HD static inline
#define FA_KERNEL extern "C" void
#define FA_UNROLL
#define FA_CLZ(x) __builtin_clz(x)
#define __restrict__ __restrict
struct fa_dim3 {
  unsigned int x, y, z;
};
extern fa_dim3 threadIdx, blockIdx, blockDim, gridDim;
#endif

typedef unsigned int u32;
typedef unsigned long long u64;

// Window of the sliding-free fixed-window exponentiation: 2^4 = 16 precomputed powers per
// thread. Must equal POW_WINDOW in fedaccel/reference.py.
#define FA_POW_WINDOW 4
// Window of the bucket multi-exponentiation: 2^4 - 1 = 15 buckets per thread. Must equal
// MULTIEXP_WINDOW in fedaccel/reference.py.
#define FA_MULTIEXP_WINDOW 4

template <int L>
FA_HD void fa_copy(u32* r, const u32* a) {
  FA_UNROLL
  for (int j = 0; j < L; ++j) r[j] = a[j];
}

template <int L>
FA_HD void fa_zero(u32* r) {
  FA_UNROLL
  for (int j = 0; j < L; ++j) r[j] = 0;
}

// r = t - m if t >= m else t, where t has L + 1 limbs (t[L] is 0 or 1) and the result fits L
// limbs. Branch-free select so that all threads of a warp follow the same path.
template <int L>
FA_HD void fa_sub_if_geq(u32* r, const u32* t, const u32* __restrict__ m) {
  u32 d[L];
  u64 borrow = 0;
  FA_UNROLL
  for (int j = 0; j < L; ++j) {
    const u64 diff = (u64)t[j] - m[j] - borrow;
    d[j] = (u32)diff;
    borrow = (diff >> 32) & 1u;
  }
  const u64 top = (u64)t[L] - borrow;
  const u32 keep_t = (u32)((top >> 32) & 1u);  // 1: t < m, the subtraction borrowed out
  const u32 mask = 0u - keep_t;
  FA_UNROLL
  for (int j = 0; j < L; ++j) r[j] = (t[j] & mask) | (d[j] & ~mask);
}

// Montgomery product r = a * b * R^-1 mod m (CIOS: coarsely integrated operand scanning).
// Preconditions: a * b < m * R (true when a, b < m, or when b < m and a < R), m odd.
// The outer loop runs over the limbs of a; after iteration i the (L+2)-limb accumulator t
// holds (a[0..i] * b + Q_i * m) / 2^(32 (i+1)), with Q_i chosen limb by limb so the low limb
// vanishes; t < 2m at the end, one conditional subtraction makes it canonical.
// r may alias a or b: both are only read before the final store.
template <int L>
FA_HD void fa_mont_mul(u32* r, const u32* a, const u32* b, const u32* __restrict__ m,
                       u32 minv) {
  u32 t[L + 2];
  FA_UNROLL
  for (int j = 0; j < L + 2; ++j) t[j] = 0;
  for (int i = 0; i < L; ++i) {
    const u64 ai = a[i];
    u64 c = 0;
    // ai * b[j] + t[j] + carry <= (2^32-1)^2 + 2 (2^32-1) = 2^64 - 1: no overflow.
    FA_UNROLL
    for (int j = 0; j < L; ++j) {
      c += ai * b[j] + t[j];
      t[j] = (u32)c;
      c >>= 32;
    }
    c += t[L];
    t[L] = (u32)c;
    t[L + 1] = (u32)(c >> 32);
    const u64 q = (u32)(t[0] * minv);
    c = (q * m[0] + t[0]) >> 32;  // the low limb is zero by the choice of q
    FA_UNROLL
    for (int j = 1; j < L; ++j) {
      c += q * m[j] + t[j];
      t[j - 1] = (u32)c;
      c >>= 32;
    }
    c += t[L];
    t[L - 1] = (u32)c;
    t[L] = t[L + 1] + (u32)(c >> 32);
  }
  fa_sub_if_geq<L>(r, t, m);
}

// Montgomery reduction of a 2L-limb value: r = T * R^-1 mod m. Precondition T < m * R.
template <int L>
FA_HD void fa_redc_wide(u32* r, const u32* T, const u32* __restrict__ m, u32 minv) {
  u32 t[2 * L + 1];
  for (int j = 0; j < 2 * L; ++j) t[j] = T[j];
  t[2 * L] = 0;
  for (int i = 0; i < L; ++i) {
    const u64 q = (u32)(t[i] * minv);
    u64 c = 0;
    for (int j = 0; j < L; ++j) {
      c += q * m[j] + t[i + j];
      t[i + j] = (u32)c;
      c >>= 32;
    }
    for (int k = i + L; k <= 2 * L; ++k) {
      c += t[k];
      t[k] = (u32)c;
      c >>= 32;
    }
  }
  fa_sub_if_geq<L>(r, t + L, m);
}

// A modulus block is 4 consecutive L-limb values: m, R^2 mod m, R mod m, R^3 mod m
// (built by fedaccel.montgomery.Modulus.block).
template <int L>
struct FaMod {
  const u32* m;
  const u32* r2;
  const u32* one;
  const u32* r3;
  u32 minv;
};

template <int L>
FA_HD FaMod<L> fa_mod(const u32* block, u32 minv) {
  FaMod<L> md;
  md.m = block;
  md.r2 = block + L;
  md.one = block + 2 * L;
  md.r3 = block + 3 * L;
  md.minv = minv;
  return md;
}

template <int L>
FA_HD void fa_to_mont(u32* r, const u32* a, const FaMod<L>& md) {
  // a < R and R^2 mod m < m, so a * r2 < m * R holds for any L-limb a: this also reduces.
  fa_mont_mul<L>(r, a, md.r2, md.m, md.minv);
}

template <int L>
FA_HD void fa_from_mont(u32* r, const u32* a, const FaMod<L>& md) {
  u32 one[L];
  fa_zero<L>(one);
  one[0] = 1;
  fa_mont_mul<L>(r, a, one, md.m, md.minv);
}

// Bits [pos, pos + w) of a little-endian u32 exponent of ewords limbs, w <= 16.
FA_HD u32 fa_bits(const u32* e, int ewords, int pos, int w) {
  const int wi = pos >> 5;
  const int sh = pos & 31;
  u64 v = wi < ewords ? e[wi] : 0u;
  if (wi + 1 < ewords) v |= (u64)e[wi + 1] << 32;
  return (u32)(v >> sh) & ((1u << w) - 1u);
}

FA_HD int fa_bit_length(const u32* e, int ewords) {
  for (int i = ewords - 1; i >= 0; --i) {
    if (e[i] != 0) return 32 * i + (32 - FA_CLZ(e[i]));
  }
  return 0;
}

// r = x^e in the Montgomery domain (x and r in Montgomery form), fixed window of
// FA_POW_WINDOW bits scanned from the top bit of this thread's exponent. Windows of zero
// skip their multiplication; the numpy reference multiplies by R mod m instead, which gives
// the same canonical value.
template <int L>
FA_HD void fa_pow_mont(u32* r, const u32* x, const u32* e, int ewords, const FaMod<L>& md) {
  const int W = FA_POW_WINDOW;
  u32 tab[1 << W][L];
  fa_copy<L>(tab[0], md.one);
  fa_copy<L>(tab[1], x);
  for (int k = 2; k < (1 << W); ++k) fa_mont_mul<L>(tab[k], tab[k - 1], x, md.m, md.minv);
  const int nbits = fa_bit_length(e, ewords);
  const int nwin = (nbits + W - 1) / W;
  u32 acc[L];
  fa_copy<L>(acc, md.one);
  for (int w = nwin - 1; w >= 0; --w) {
    const u32 d = fa_bits(e, ewords, w * W, W);
    if (w == nwin - 1) {
      fa_copy<L>(acc, tab[d]);  // the top window holds the top bit: d != 0
      continue;
    }
    for (int s = 0; s < W; ++s) fa_mont_mul<L>(acc, acc, acc, md.m, md.minv);
    if (d != 0) fa_mont_mul<L>(acc, acc, tab[d], md.m, md.minv);
  }
  fa_copy<L>(r, acc);
}

// r = prod_i table[i][digit_i(e)] in the Montgomery domain, where digit_i is the i-th
// `window`-bit digit of e and table[i][j] = g^(j 2^(window i)) R mod m (built on the host by
// fedaccel.tables, resident in device memory). No squarings: nwin multiplications at most.
template <int L>
FA_HD void fa_fixed_base_mont(u32* r, const u32* __restrict__ table, int window, int nwin,
                              const u32* e, int ewords, const FaMod<L>& md) {
  u32 acc[L];
  fa_copy<L>(acc, md.one);
  bool first = true;
  for (int i = 0; i < nwin; ++i) {
    const u32 d = fa_bits(e, ewords, i * window, window);
    if (d == 0) continue;
    const u32* entry = table + (((u64)i << window) + d) * (u64)L;
    if (first) {
      fa_copy<L>(acc, entry);
      first = false;
    } else {
      fa_mont_mul<L>(acc, acc, entry, md.m, md.minv);
    }
  }
  fa_copy<L>(r, acc);
}

// r = a * b truncated to L limbs, a and b of `words` limbs each (2 words <= L: no truncation).
template <int L>
FA_HD void fa_mul_plain(u32* r, const u32* a, const u32* b, int words) {
  u32 t[L];
  fa_zero<L>(t);
  for (int i = 0; i < words; ++i) {
    const u64 ai = a[i];
    u64 c = 0;
    for (int j = 0; j < words && i + j < L; ++j) {
      c += ai * b[j] + t[i + j];
      t[i + j] = (u32)c;
      c >>= 32;
    }
    if (i + words < L) t[i + words] = (u32)c;
  }
  fa_copy<L>(r, t);
}

// r = a - 1 for a >= 1.
template <int L>
FA_HD void fa_sub_one(u32* r, const u32* a) {
  u64 borrow = 1;
  FA_UNROLL
  for (int j = 0; j < L; ++j) {
    const u64 diff = (u64)a[j] - borrow;
    r[j] = (u32)diff;
    borrow = (diff >> 32) & 1u;
  }
}

// r = a + 1 (mod 2^(32 L)).
template <int L>
FA_HD void fa_add_one(u32* r, const u32* a) {
  u64 c = 1;
  FA_UNROLL
  for (int j = 0; j < L; ++j) {
    c += a[j];
    r[j] = (u32)c;
    c >>= 32;
  }
}

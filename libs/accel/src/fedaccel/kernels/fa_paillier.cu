// Batch Paillier kernels: one thread per big integer, FA_LIMBS 32-bit limbs per integer.
//
// Compiled once per limb count with -DFA_LIMBS=<L> (L in fedaccel.montgomery.KERNEL_WORDS);
// the Python wrappers (fedaccel/kernel_backend.py) launch the extern "C" names below.
// Every kernel uses a grid-stride loop over `count` rows, so any grid size is correct.
//
// Arrays are row-major (rows, L) u32, limb 0 least significant; a modulus is passed as a
// 4 x L block (m, R^2, R, R^3 mod m) plus minv = -m^-1 mod 2^32. Exponents are (rows, ewords)
// u32 with a row stride that is 0 when one exponent is shared by the whole batch.
#include "fa_bigint.cuh"

#ifndef FA_LIMBS
#error "compile with -DFA_LIMBS=<32-bit limbs per integer>"
#endif

#if !defined(__CUDACC__) && !defined(__CUDACC_RTC__)
fa_dim3 threadIdx, blockIdx, blockDim, gridDim;
// Host emulation: the caller sets the launch geometry and this thread's position, then calls
// the kernel entry point once per (block, thread).
extern "C" void fa_host_set_thread(unsigned int grid, unsigned int block, unsigned int bx,
                                   unsigned int tx) {
  gridDim.x = grid;
  gridDim.y = gridDim.z = 1;
  blockDim.x = block;
  blockDim.y = blockDim.z = 1;
  blockIdx.x = bx;
  blockIdx.y = blockIdx.z = 0;
  threadIdx.x = tx;
  threadIdx.y = threadIdx.z = 0;
}
extern "C" int fa_host_limbs() { return FA_LIMBS; }
#endif

constexpr int FL = FA_LIMBS;
constexpr int FH = FA_LIMBS / 2;

#define FA_GRID_LOOP(row, count)                                            \
  for (long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x; \
       row < (count); row += (long long)blockDim.x * gridDim.x)

// out = a R mod m
FA_KERNEL fa_to_mont(u32* out, const u32* a, long long count, const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL];
    fa_copy<FL>(x, a + row * FL);
    fa_to_mont<FL>(x, x, md);
    fa_copy<FL>(out + row * FL, x);
  }
}

// out = a R^-1 mod m
FA_KERNEL fa_from_mont(u32* out, const u32* a, long long count, const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL];
    fa_copy<FL>(x, a + row * FL);
    fa_from_mont<FL>(x, x, md);
    fa_copy<FL>(out + row * FL, x);
  }
}

// out = a b R^-1 mod m (Montgomery domain product); b_stride 0 broadcasts one b.
FA_KERNEL fa_mont_mul(u32* out, const u32* a, const u32* b, long long b_stride,
                      long long count, const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL], y[FL];
    fa_copy<FL>(x, a + row * FL);
    fa_copy<FL>(y, b + row * b_stride);
    fa_mont_mul<FL>(x, x, y, md.m, md.minv);
    fa_copy<FL>(out + row * FL, x);
  }
}

// out = a b mod m for a, b < m in ordinary form: two Montgomery products
// (a b R^-1, then times R^2). Paillier ciphertext addition is this with m = n^2.
FA_KERNEL fa_mulmod(u32* out, const u32* a, const u32* b, long long b_stride, long long count,
                    const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL], y[FL];
    fa_copy<FL>(x, a + row * FL);
    fa_copy<FL>(y, b + row * b_stride);
    fa_mont_mul<FL>(x, x, y, md.m, md.minv);
    fa_mont_mul<FL>(x, x, md.r2, md.m, md.minv);
    fa_copy<FL>(out + row * FL, x);
  }
}

#define FA_IN_MONT 1
#define FA_OUT_MONT 2

// out = base^e mod m; flags say whether base is given and out is wanted in Montgomery form.
// Ciphertext times plaintext scalar is this with m = n^2 and the scalar as exponent.
FA_KERNEL fa_powmod(u32* out, const u32* base, const u32* e, int ewords, long long e_stride,
                    long long count, const u32* mod, u32 minv, int flags) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL];
    fa_copy<FL>(x, base + row * FL);
    if (!(flags & FA_IN_MONT)) fa_to_mont<FL>(x, x, md);
    fa_pow_mont<FL>(x, x, e + row * e_stride, ewords, md);
    if (!(flags & FA_OUT_MONT)) fa_from_mont<FL>(x, x, md);
    fa_copy<FL>(out + row * FL, x);
  }
}

// out = g^e mod m from a resident table of g^(j 2^(window i)) R mod m, shape (nwin, 2^window, L).
FA_KERNEL fa_fixed_base_pow(u32* out, const u32* table, int window, int nwin, const u32* e,
                            int ewords, long long e_stride, long long count, const u32* mod,
                            u32 minv, int flags) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL];
    fa_fixed_base_mont<FL>(x, table, window, nwin, e + row * e_stride, ewords, md);
    if (!(flags & FA_OUT_MONT)) fa_from_mont<FL>(x, x, md);
    fa_copy<FL>(out + row * FL, x);
  }
}

// Paillier encryption with g = n + 1: out = (1 + msg n) obf mod n^2, msg < n given in the low
// nwords limbs of its row, n of nwords limbs (2 nwords <= L, so 1 + msg n < n^2 needs no
// reduction). obf_mont says whether obf is already in Montgomery form (one product saved).
FA_KERNEL fa_encrypt(u32* out, const u32* msg, const u32* n, int nwords, const u32* obf,
                     int obf_mont, long long count, const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL], y[FL];
    fa_mul_plain<FL>(x, msg + row * FL, n, nwords);
    fa_add_one<FL>(x, x);
    fa_copy<FL>(y, obf + row * FL);
    fa_mont_mul<FL>(x, x, y, md.m, md.minv);  // (1 + msg n) obf R^-1, or (1 + msg n) obf
    if (!obf_mont) fa_mont_mul<FL>(x, x, md.r2, md.m, md.minv);
    fa_copy<FL>(out + row * FL, x);
  }
}

// Encryption with the DJN obfuscator computed in place: obf = hs^e from the resident
// fixed-base table (Montgomery form), then one product with 1 + msg n.
FA_KERNEL fa_encrypt_fixed_base(u32* out, const u32* msg, const u32* n, int nwords,
                                const u32* table, int window, int nwin, const u32* e,
                                int ewords, long long e_stride, long long count,
                                const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  FA_GRID_LOOP(row, count) {
    u32 x[FL], y[FL];
    fa_fixed_base_mont<FL>(y, table, window, nwin, e + row * e_stride, ewords, md);
    fa_mul_plain<FL>(x, msg + row * FL, n, nwords);
    fa_add_one<FL>(x, x);
    fa_mont_mul<FL>(x, x, y, md.m, md.minv);
    fa_copy<FL>(out + row * FL, x);
  }
}

// Partial multi-exponentiation for X^T [[d]]: thread t = j * nchunks + c computes
//   out[t] = prod_{i in chunk c} bases[i]^exps[i, j]   (Montgomery form in and out)
// with the bucket (Pippenger) method over FA_MULTIEXP_WINDOW-bit digits: per window, bucket
// B_d collects the bases whose digit is d, then prod_d B_d^d is formed with two running
// products. exps is (k, f) uint64 viewed as (k, f, 2) u32; nwin windows cover every exponent.
FA_KERNEL fa_multiexp_partial(u32* out, const u32* bases, const u32* exps, long long k, int f,
                              int chunk, int nwin, long long count, const u32* mod, u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  const int W = FA_MULTIEXP_WINDOW;
  const int NB = (1 << W) - 1;
  const long long nchunks = (k + chunk - 1) / chunk;
  FA_GRID_LOOP(t, count) {
    const long long j = t / nchunks;
    const long long c = t % nchunks;
    const long long lo = c * chunk;
    const long long hi = lo + chunk < k ? lo + chunk : k;
    u32 acc[FL];
    u32 bucket[(1 << FA_MULTIEXP_WINDOW) - 1][FL];
    fa_copy<FL>(acc, md.one);
    for (int w = nwin - 1; w >= 0; --w) {
      for (int s = 0; s < W; ++s) fa_mont_mul<FL>(acc, acc, acc, md.m, md.minv);
      for (int d = 0; d < NB; ++d) fa_copy<FL>(bucket[d], md.one);
      for (long long i = lo; i < hi; ++i) {
        const u32* ew = exps + (i * f + j) * 2;
        const u32 d = fa_bits(ew, 2, w * W, W);
        if (d != 0) {
          fa_mont_mul<FL>(bucket[d - 1], bucket[d - 1], bases + i * FL, md.m, md.minv);
        }
      }
      // prod_d B_d^d = prod_{d=NB..1} (B_NB ... B_d): running product S, total T.
      u32 s_run[FL], t_run[FL];
      fa_copy<FL>(s_run, md.one);
      fa_copy<FL>(t_run, md.one);
      for (int d = NB; d >= 1; --d) {
        fa_mont_mul<FL>(s_run, s_run, bucket[d - 1], md.m, md.minv);
        fa_mont_mul<FL>(t_run, t_run, s_run, md.m, md.minv);
      }
      fa_mont_mul<FL>(acc, acc, t_run, md.m, md.minv);
    }
    fa_copy<FL>(out + t * FL, acc);
  }
}

// One level of a product tree: in is (groups, width) rows, out is (groups, (width + 1) / 2);
// out[g, c] = in[g, 2c] in[g, 2c + 1] R^-1 (Montgomery form), an odd last row passes through.
FA_KERNEL fa_prod_reduce(u32* out, const u32* in, int width, long long count, const u32* mod,
                         u32 minv) {
  const FaMod<FL> md = fa_mod<FL>(mod, minv);
  const int half = (width + 1) / 2;
  FA_GRID_LOOP(t, count) {
    const long long g = t / half;
    const long long c = t % half;
    const u32* left = in + (g * width + 2 * c) * FL;
    u32 x[FL];
    fa_copy<FL>(x, left);
    if (2 * c + 1 < width) fa_mont_mul<FL>(x, x, left + FL, md.m, md.minv);
    fa_copy<FL>(out + t * FL, x);
  }
}

// Half of a CRT decryption for the prime p (launched once for p, once for q):
//   out = L_p(c^(p-1) mod p^2) hp mod p,   L_p(u) = (u - 1) / p
// psq_mod: modulus block of p^2 with FL limbs; hmod: block of p with FH limbs;
// e = p - 1; pinv = p^-1 mod 2^(32 FH) (exact division: p divides u - 1 and the quotient is
// below p); hmont = hp 2^(32 FH) mod p. c rows have cwords <= 2 FL limbs (c < n^2 < p^2 R).
FA_KERNEL fa_decrypt_half(u32* out, const u32* c, int cwords, long long count,
                          const u32* psq_mod, u32 psq_minv, const u32* e, int ewords,
                          const u32* hmod, u32 p_minv, const u32* pinv, const u32* hmont) {
  const FaMod<FL> md = fa_mod<FL>(psq_mod, psq_minv);
  FA_GRID_LOOP(row, count) {
    u32 wide[2 * FL];
    for (int j = 0; j < 2 * FL; ++j) wide[j] = j < cwords ? c[row * cwords + j] : 0u;
    u32 x[FL];
    fa_redc_wide<FL>(x, wide, md.m, md.minv);       // c R^-1 mod p^2
    fa_mont_mul<FL>(x, x, md.r3, md.m, md.minv);    // c R mod p^2 (Montgomery form of c)
    fa_pow_mont<FL>(x, x, e, ewords, md);
    fa_from_mont<FL>(x, x, md);                     // u = c^(p-1) mod p^2, u = 1 mod p
    fa_sub_one<FL>(x, x);
    u32 k[FH], lo[FH];
    fa_copy<FH>(lo, x);
    fa_mul_plain<FH>(k, lo, pinv, FH);              // (u - 1) / p, exact, < p
    fa_mont_mul<FH>(k, k, hmont, hmod, p_minv);     // ((u - 1) / p) hp mod p
    fa_copy<FH>(out + row * FH, k);
  }
}

// Packing of quantized plaintext slots: out row = sum_s slots[row, s] 2^(slot_bits s), each slot
// < 2^slot_bits (checked by the caller), slot_bits <= 64, k slot_bits <= 32 FL.
FA_KERNEL fa_pack(u32* out, const u32* slots, int k, int slot_bits, long long count) {
  FA_GRID_LOOP(row, count) {
    u32 x[FL];
    fa_zero<FL>(x);
    for (int s = 0; s < k; ++s) {
      const u32* v = slots + (row * k + s) * 2;
      const long long pos = (long long)s * slot_bits;
      for (int half = 0; half < 2; ++half) {
        const u64 part = v[half];
        if (part == 0) continue;
        const long long bit = pos + 32 * half;
        const int wi = (int)(bit >> 5);
        const int sh = (int)(bit & 31);
        const u64 shifted = part << sh;
        if (wi < FL) x[wi] |= (u32)shifted;
        if (wi + 1 < FL) x[wi + 1] |= (u32)(shifted >> 32);
      }
    }
    fa_copy<FL>(out + row * FL, x);
  }
}

// Inverse of fa_pack: slots[row, s] = bits [s slot_bits, (s + 1) slot_bits) of the row.
FA_KERNEL fa_unpack(u32* slots, const u32* packed, int k, int slot_bits, long long count) {
  FA_GRID_LOOP(row, count) {
    const u32* x = packed + row * FL;
    for (int s = 0; s < k; ++s) {
      const long long pos = (long long)s * slot_bits;
      u64 v = 0;
      // gather up to three limbs covering [pos, pos + 64)
      const int wi = (int)(pos >> 5);
      const int sh = (int)(pos & 31);
      const u64 w0 = wi < FL ? x[wi] : 0u;
      const u64 w1 = wi + 1 < FL ? x[wi + 1] : 0u;
      const u64 w2 = wi + 2 < FL ? x[wi + 2] : 0u;
      v = (w0 | (w1 << 32)) >> sh;
      if (sh != 0) v |= w2 << (64 - sh);
      if (slot_bits < 64) v &= (((u64)1) << slot_bits) - 1u;
      slots[(row * k + s) * 2] = (u32)v;
      slots[(row * k + s) * 2 + 1] = (u32)(v >> 32);
    }
  }
}

/* Small C kernels for vecmath.pyx that must stay loops (so the compiler vectorises them)
 * rather than be unrolled into the caller's loop nest. */
#ifndef IPFS_ACCEL_KERNELS_H
#define IPFS_ACCEL_KERNELS_H
#include <stddef.h>

#if defined(_MSC_VER)
#define IA_NOINLINE __declspec(noinline)
#else
#define IA_NOINLINE __attribute__((noinline))
#endif

/* How many of p[0..n) are > thr (optionally after scaling by s[i]). */
#define IA_COUNT_ABOVE(NAME, T)                                                     \
    static IA_NOINLINE int NAME(const T* p, ptrdiff_t n, T thr) {                   \
        int cnt = 0;                                                                \
        for (ptrdiff_t i = 0; i < n; i++) cnt += p[i] > thr;                        \
        return cnt;                                                                 \
    }                                                                               \
    static IA_NOINLINE int NAME##_scaled(const T* p, const T* s, ptrdiff_t n, T thr) { \
        int cnt = 0;                                                                \
        for (ptrdiff_t i = 0; i < n; i++) cnt += p[i] * s[i] > thr;                 \
        return cnt;                                                                 \
    }

IA_COUNT_ABOVE(ia_count_above_f, float)
IA_COUNT_ABOVE(ia_count_above_d, double)

#endif

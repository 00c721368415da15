// CPU feature levels for choosing library kernels at run time (see mumu_kernels.h).
#include "mumu_kernels.h"

int mumu_cpu_vector_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    // The AVX-512 subset OpenBLAS's SkylakeX kernels use (F, DQ, CD, BW, VL); __builtin_cpu_supports also
    // checks that the OS saves the vector state (XGETBV).
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

#if defined(__GLIBC__)
#include <malloc.h>
void mumu_release_freed_heap(void) { malloc_trim(0); }
void mumu_keep_freed_heap(void) {
    mallopt(M_MMAP_MAX, 0);        // every allocation from the heap, however large
    mallopt(M_TRIM_THRESHOLD, -1); // and nothing freed returned to the OS but by malloc_trim
}
#else
void mumu_release_freed_heap(void) {}
void mumu_keep_freed_heap(void) {}
#endif

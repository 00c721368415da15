#include <cblas.h>

/* LAPACK from the same OpenBLAS library, which exports the Fortran symbols but ships no LAPACKE header on
   every distribution: the Fortran interface, column-major, every argument by pointer (hidden string-length
   arguments omitted, as C callers of single-character options customarily do). */

/* Singular value decomposition by divide and conquer: A (m x n, leading dimension lda) = U diag(S) VT.
   jobz "S": the first min(m, n) columns of U (ldu >= m) and rows of VT (ldvt >= min(m, n)); A is destroyed.
   lwork = -1 is a workspace query (the optimal size comes back in work[0]); iwork holds 8 min(m, n) ints.
   info: 0 ok, < 0 bad argument -info, > 0 did not converge. */
void sgesdd_(const char *jobz, const int *m, const int *n, float *a, const int *lda, float *s,
             float *u, const int *ldu, float *vt, const int *ldvt, float *work, const int *lwork,
             int *iwork, int *info);

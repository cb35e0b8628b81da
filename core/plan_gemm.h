#ifndef CBRICK_PLAN_GEMM_H
#define CBRICK_PLAN_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* The AVX-512 convolution GEMM: C[MR x NR] tiles over packed weights (MR rows, K-major) and
 * packed columns (NR wide, K-major), with the epilogue applied in registers. */
#define GEMM_MR 12
#define GEMM_NR 32
/* Depth per pass over a tile; unblocked measured fastest (the slab stays in L2). */
#define GEMM_KC ((int64_t)1 << 40)

bool plan_gemm_available(void);

typedef struct gemm_tile {
  int64_t kc;
  const float *a; /* [kc][GEMM_MR] */
  const float *b; /* [kc][GEMM_NR] */
  float *c;
  int64_t ldc;
  int mr, nr;        /* valid rows and columns */
  bool load_c;       /* accumulate onto c */
  bool last;         /* apply bias, residual and ReLU, else store the partial sum */
  const float *bias; /* [mr] */
  const float *res;  /* like c, or NULL */
  bool relu;
} gemm_tile;

void plan_gemm_tile(const gemm_tile *t);

#endif

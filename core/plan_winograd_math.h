#ifndef CBRICK_PLAN_WINOGRAD_MATH_H
#define CBRICK_PLAN_WINOGRAD_MATH_H

/* The column transforms of F(3x3, 3x3) and F(4x4, 3x3), written once for any vector width:
 * WG_TRANSFORMS(ATTR, T, P) defines bt5, at5, bt6 and at6 on vectors of type T with the
 * intrinsics prefixed P (_mm512 or _mm256), under the target attribute ATTR. */
#include <immintrin.h>

#define WG_TRANSFORMS(ATTR, T, P)                                                                  \
  /* B^T d of F(3x3) for five vectors */                                                           \
  ATTR static inline void bt5(const T *d, T *r) {                                                  \
    T two = P##_set1_ps(2.0f);                                                                     \
    r[0] = P##_fmadd_ps(two, P##_sub_ps(d[0], d[2]), P##_sub_ps(d[3], d[1]));                      \
    r[1] = P##_fmadd_ps(two, d[1], P##_sub_ps(d[2], d[3]));                                        \
    r[2] = P##_fnmadd_ps(two, d[1], P##_fmsub_ps(P##_set1_ps(3.0f), d[2], d[3]));                  \
    r[3] = P##_sub_ps(d[3], d[1]);                                                                 \
    r[4] = P##_fmadd_ps(two, P##_sub_ps(d[1], d[3]), P##_sub_ps(d[4], d[2]));                      \
  }                                                                                                \
  /* A^T m of F(3x3) for five vectors: three outputs */                                            \
  ATTR static inline void at5(const T *m, T *o) {                                                  \
    T s12 = P##_add_ps(m[1], m[2]);                                                                \
    o[0] = P##_add_ps(P##_add_ps(m[0], s12), m[3]);                                                \
    o[1] = P##_fmadd_ps(P##_set1_ps(2.0f), m[3], P##_sub_ps(m[1], m[2]));                          \
    o[2] = P##_add_ps(P##_fmadd_ps(P##_set1_ps(4.0f), m[3], s12), m[4]);                           \
  }                                                                                                \
  /* B^T d of F(4x4) for six vectors */                                                            \
  ATTR static inline void bt6(const T *d, T *r) {                                                  \
    T four = P##_set1_ps(4.0f), five = P##_set1_ps(5.0f), two = P##_set1_ps(2.0f);                 \
    T t0 = P##_fnmadd_ps(four, d[2], d[4]), t1 = P##_fnmadd_ps(four, d[1], d[3]);                  \
    T t2 = P##_sub_ps(d[4], d[2]), t3 = P##_mul_ps(two, P##_sub_ps(d[3], d[1]));                   \
    r[0] = P##_fmadd_ps(four, d[0], P##_fnmadd_ps(five, d[2], d[4]));                              \
    r[1] = P##_add_ps(t0, t1);                                                                     \
    r[2] = P##_sub_ps(t0, t1);                                                                     \
    r[3] = P##_add_ps(t2, t3);                                                                     \
    r[4] = P##_sub_ps(t2, t3);                                                                     \
    r[5] = P##_fmadd_ps(four, d[1], P##_fnmadd_ps(five, d[3], d[5]));                              \
  }                                                                                                \
  /* A^T m of F(4x4) for six vectors: four outputs */                                              \
  ATTR static inline void at6(const T *m, T *o) {                                                  \
    T s12 = P##_add_ps(m[1], m[2]), d12 = P##_sub_ps(m[1], m[2]);                                  \
    T s34 = P##_add_ps(m[3], m[4]), d34 = P##_sub_ps(m[3], m[4]);                                  \
    o[0] = P##_add_ps(P##_add_ps(m[0], s12), s34);                                                 \
    o[1] = P##_fmadd_ps(P##_set1_ps(2.0f), d34, d12);                                              \
    o[2] = P##_fmadd_ps(P##_set1_ps(4.0f), s34, s12);                                              \
    o[3] = P##_add_ps(P##_fmadd_ps(P##_set1_ps(8.0f), d34, d12), m[5]);                            \
  }

#endif

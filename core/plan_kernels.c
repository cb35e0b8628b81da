/* Which kernels the packed path runs: the best instruction set the processor has, capped by
 * CBRICK_ISA (avx512, avx2 or portable; another value caps nothing). */
#include <stdlib.h>
#include <string.h>

#include "cbrick/plan.h"
#include "plan_gemm.h"

enum { ISA_PORTABLE, ISA_AVX2, ISA_AVX512 };

static int isa_named(const char *name) {
  if (!name) return ISA_AVX512;
  if (strcmp(name, "portable") == 0) return ISA_PORTABLE;
  if (strcmp(name, "avx2") == 0) return ISA_AVX2;
  return ISA_AVX512;
}

static int isa_present(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi2"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
  return ISA_PORTABLE;
}

const plan_kernels *plan_kernels_best(void) {
  int isa = isa_present(), cap = isa_named(getenv("CBRICK_ISA"));
  isa = isa < cap ? isa : cap;
  return isa == ISA_AVX512 ? &plan_kernels_avx512 : isa == ISA_AVX2 ? &plan_kernels_avx2 : NULL;
}

CB_API const char *cb_kernels_isa(void) {
  const plan_kernels *k = plan_kernels_best();
  return k ? k->isa : "portable";
}

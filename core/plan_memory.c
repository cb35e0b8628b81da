/* Memory for a plan: weights stream through every run, so they sit on huge pages, all of
 * them in one range (a ResNet-50's 1 MiB layers would each leave most of a huge page). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "plan_internal.h"

#define BLOCK_ALIGN 64
#define HUGE_PAGE ((size_t)2 << 20)

static size_t round_up(size_t v, size_t m) {
  return (v + m - 1) / m * m;
}

void *plan_alloc(size_t bytes) {
  bytes = round_up(bytes ? bytes : 1, BLOCK_ALIGN);
  void *p = NULL;
  if (posix_memalign(&p, bytes < HUGE_PAGE ? BLOCK_ALIGN : HUGE_PAGE, bytes)) return NULL;
  /* whole huge pages only: the tail stays on small pages, so no memory is rounded up */
  if (bytes >= HUGE_PAGE) madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
  memset(p, 0, bytes);
  return p;
}

/* The most any kernel packs a conv into: output channels padded to the column kernel's rows
 * (per group) or to the small kernel's vectors, times the depth, four times for a 3x3 conv
 * (Winograd F(4x4) keeps 36 of its 9 taps). */
static size_t packed_bound(const plan_conv *c) {
  size_t og = (size_t)(c->o / c->p.groups), rows = (size_t)c->p.groups * round_up(og, 12);
  if (round_up((size_t)c->o, 32) > rows) rows = round_up((size_t)c->o, 32);
  size_t growth = c->kh == 3 && c->kw == 3 ? 4 : 1;
  return rows * (size_t)c->k * growth * sizeof(float) + BLOCK_ALIGN;
}

void plan_weights_reserve(cb_plan *plan) {
  size_t bytes = 0;
  for (int i = 0; i < plan->n_nodes; i++)
    if (plan->nodes[i].kind == PN_CONV && !plan->nodes[i].dead)
      bytes += packed_bound(&plan->nodes[i].conv);
  if (!bytes) return;
  bytes = round_up(bytes, HUGE_PAGE);
  /* Only the bytes written become resident; the rest of the range is address space. */
  void *p =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return;
  madvise(p, bytes, MADV_HUGEPAGE);
  plan->weights = p;
  plan->weights_reserved = bytes;
  plan->weights_used = 0;
}

void *plan_weights(cb_plan *plan, size_t bytes) {
  bytes = round_up(bytes, BLOCK_ALIGN);
  if (!plan->weights || bytes > plan->weights_reserved - plan->weights_used)
    return plan_alloc(bytes);
  void *p = plan->weights + plan->weights_used; /* fresh from mmap: already zero */
  plan->weights_used += bytes;
  return p;
}

void plan_weights_free(cb_plan *plan, void *p) {
  char *c = p;
  if (!plan->weights || c < plan->weights || c >= plan->weights + plan->weights_reserved) free(p);
}

void plan_weights_trim(cb_plan *plan) {
  size_t keep = round_up(plan->weights_used, HUGE_PAGE);
  if (!plan->weights || keep >= plan->weights_reserved) return;
  if (keep == 0) {
    plan_weights_release(plan);
    return;
  }
  munmap(plan->weights + keep, plan->weights_reserved - keep);
  plan->weights_reserved = keep;
}

void plan_weights_release(cb_plan *plan) {
  if (plan->weights) munmap(plan->weights, plan->weights_reserved);
  plan->weights = NULL;
}

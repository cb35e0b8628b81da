/* Memory for a plan: weights stream through every run, so large blocks sit on huge pages. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "plan_internal.h"

#define BLOCK_ALIGN 64
#define HUGE_PAGE ((size_t)2 << 20)

void *plan_alloc(size_t bytes) {
  bytes = bytes ? (bytes + BLOCK_ALIGN - 1) / BLOCK_ALIGN * BLOCK_ALIGN : BLOCK_ALIGN;
  void *p = aligned_alloc(bytes < HUGE_PAGE ? BLOCK_ALIGN : HUGE_PAGE, bytes);
  if (!p) return NULL;
  /* whole huge pages only: the tail stays on small pages, so no memory is rounded up */
  if (bytes >= HUGE_PAGE) madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
  memset(p, 0, bytes);
  return p;
}

#ifndef CBRICK_INIT_H
#define CBRICK_INIT_H

#include <stdint.h>
#include <jansson.h>
#include "module.h"

/* Seeded, reproducible random numbers for weight initialisation. */
typedef struct cb_rng {
  uint64_t state;
  uint64_t inc;
} cb_rng;

CB_API void cb_rng_seed(cb_rng *rng, uint64_t seed);
CB_API uint32_t cb_rng_u32(cb_rng *rng);
CB_API double cb_rng_uniform(cb_rng *rng); /* [0, 1) */
CB_API double cb_rng_normal(cb_rng *rng);  /* mean 0, std 1 */

/* mmcv/PyTorch initialisers on one tensor. fan_out = true means mode='fan_out'. */
CB_API void cb_init_constant(cb_tensor *t, float value);
CB_API void cb_init_normal(cb_tensor *t, double mean, double std, cb_rng *rng);
CB_API void cb_init_uniform(cb_tensor *t, double a, double b, cb_rng *rng);
CB_API void cb_init_kaiming(cb_tensor *t, double a, bool fan_out, const char *nonlinearity,
                            bool uniform, cb_rng *rng);
CB_API void cb_init_xavier(cb_tensor *t, double gain, bool uniform, cb_rng *rng);

/* mmcv's init_cfg (an object or a list of them: Constant, Normal, Uniform,
 * Kaiming, Xavier, with layer / override / bias / bias_prob) applied to m.
 * path names init_cfg in messages. */
CB_API int cb_init_apply(cb_module *m, json_t *init_cfg, const char *path, cb_rng *rng,
                         cb_error *err);

/* init_weights over the tree: a module with ops->init_weights handles its own
 * subtree; others recurse into their children. */
CB_API int cb_module_init_weights(cb_module *m, cb_rng *rng, cb_error *err);

#endif

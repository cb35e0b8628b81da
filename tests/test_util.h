#ifndef CBRICK_TEST_UTIL_H
#define CBRICK_TEST_UTIL_H

#include <cbrick.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ||got - want|| / ||want|| (the plain norm of got - want when want is all zero). */
double rel_l2(const float *got, const float *want, long n);

/* The named tensor of a fixture; fails the running test when it is missing. */
cb_tensor *fixture_tensor(const cb_weights *w, const char *name);

/* A fixture's expectations (input, out.*, mmseg.*, state.*), not the model's tensors. */
bool fixture_is_expectation(const char *name);
/* Copies of a fixture's state-dict tensors only; fails the test when out of memory. */
cb_weights *fixture_model_weights(const cb_weights *w);

/* Suite set-up and tear-down: the built-in plugins (warnings silenced), then unload all. */
void load_builtin_plugins(void);
void unload_plugins(void);
/* The build folder `make test` passes in CBRICK_BUILD (build/ by default). */
const char *test_build_dir(void);
/* <build>/tests/plugins/FILE; the last 4 results stay valid. */
const char *test_plugin_path(const char *file);
/* Loads that test plugin, failing the test when it does not load. */
void load_test_plugin(const char *file);
/* Caps the kernels that plans compile to at isa (CBRICK_ISA); skips the running test where
 * the processor has no such kernels. */
void use_kernels_or_skip(const char *isa);

/* A backbone from config text, built as "model.backbone". */
cb_module *build_backbone_text(const char *text, cb_error *err);
/* The same, failing the test when it does not build. */
cb_module *build_backbone_ok(const char *text);
/* The config must fail to build with an error containing needle. */
void expect_backbone_error(const char *text, const char *needle);

/* Random norm affines and statistics (weight and running_var in [0.5, 1.5], bias and
 * running_mean in [-0.2, 0.2]) over the init's, so that every residual branch contributes
 * (mmseg's init zeroes each block's last norm). */
void randomize_norms(cb_module *m, cb_rng *rng);

#endif

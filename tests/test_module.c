#include <criterion/criterion.h>
#include <string.h>

#include <cbrick.h>

static const char *const norm_bases[] = {"_BatchNorm", NULL};
static const cb_module_ops leaf_ops = {.kind = "Leaf"};
static const cb_module_ops norm_ops = {.kind = "BatchNorm2d", .bases = norm_bases};

static void frozen_train(cb_module *m, bool mode) {
  cb_module_train_default(m, mode);
  cb_module *stem = cb_module_child(m, "stem");
  if (stem) cb_module_train(stem, false);
}
static const cb_module_ops net_ops = {.kind = "Net", .train = frozen_train};

static cb_module *leaf(const char *kind_is_norm) {
  cb_error err = {0};
  cb_module *m = cb_module_new(kind_is_norm ? &norm_ops : &leaf_ops, NULL, &err);
  const int64_t shape[1] = {2};
  cr_assert_not_null(cb_module_add_param(m, "weight", 1, shape, &err));
  if (kind_is_norm) {
    cr_assert_not_null(cb_module_add_buffer(m, "running_mean", CB_F32, 1, shape, &err));
    cr_assert_not_null(cb_module_add_param(m, "bias", 1, shape, &err));
    cr_assert_not_null(cb_module_add_buffer(m, "num_batches_tracked", CB_I64, 0, NULL, &err));
  }
  return m;
}

/* net: stem(conv, bn) + layer1 (Sequential of one block with bn1). */
static cb_module *small_net(void) {
  cb_error err = {0};
  cb_module *net = cb_module_new(&net_ops, NULL, &err);
  cb_module *stem = cb_sequential_new(&err);
  cr_assert_eq(cb_module_add_child(stem, "0", leaf(NULL), &err), 0);
  cr_assert_eq(cb_module_add_child(stem, "1", leaf("norm"), &err), 0);
  cr_assert_eq(cb_module_add_child(net, "stem", stem, &err), 0);
  cb_module *layer = cb_sequential_new(&err);
  cb_module *block = cb_module_new(&leaf_ops, NULL, &err);
  cr_assert_eq(cb_module_add_child(block, "bn1", leaf("norm"), &err), 0);
  cr_assert_eq(cb_module_add_child(layer, "0", block, &err), 0);
  cr_assert_eq(cb_module_add_child(net, "layer1", layer, &err), 0);
  return net;
}

static int collect(const char *name, cb_param *p, void *ud) {
  (void)p;
  strcat(ud, name);
  strcat(ud, " ");
  return 0;
}

Test(module, state_dict_names_and_order_match_pytorch) {
  cb_module *net = small_net();
  char names[1024] = "";
  cb_module_visit_state(net, collect, names);
  /* PyTorch: parameters first, then buffers, per module, depth first. */
  cr_assert_str_eq(names, "stem.0.weight stem.1.weight stem.1.bias stem.1.running_mean "
                          "stem.1.num_batches_tracked layer1.0.bn1.weight layer1.0.bn1.bias "
                          "layer1.0.bn1.running_mean layer1.0.bn1.num_batches_tracked ");
  cr_assert_not_null(cb_module_find_param(net, "layer1.0.bn1.running_mean"));
  cr_assert_null(cb_module_find_param(net, "layer1.0.bn2.running_mean"));
  cr_assert_eq(cb_module_find(net, "layer1.0"),
               cb_module_child(cb_module_child(net, "layer1"), "0"));
  cr_assert_eq(cb_module_count_params(net), 2 + 4 + 4);
  cb_module_free(net);
}

Test(module, train_eval_propagate_and_override) {
  cb_module *net = small_net();
  cr_assert(net->training, "modules start in training mode, as in PyTorch");
  cb_module_train(net, false);
  cr_assert(!cb_module_find(net, "layer1.0.bn1")->training);
  cb_module_train(net, true);
  cr_assert(cb_module_find(net, "layer1.0.bn1")->training);
  cr_assert(!cb_module_find(net, "stem.1")->training, "the override keeps stem in eval");
  cb_module_free(net);
}

Test(module, requires_grad_skips_buffers) {
  cb_module *net = small_net();
  cb_module_set_requires_grad(cb_module_child(net, "stem"), false);
  cr_assert(!cb_module_find_param(net, "stem.1.weight")->requires_grad);
  cr_assert(cb_module_find_param(net, "layer1.0.bn1.weight")->requires_grad);
  cr_assert(!cb_module_find_param(net, "stem.1.running_mean")->requires_grad);
  cb_module_free(net);
}

Test(module, kind_and_bases) {
  cb_module *bn = leaf("norm");
  cr_assert(cb_module_is(bn, "BatchNorm2d"));
  cr_assert(cb_module_is(bn, "_BatchNorm"));
  cr_assert(!cb_module_is(bn, "GroupNorm"));
  cb_module_free(bn);
}

Test(module, duplicate_and_bad_names) {
  cb_error err = {0};
  cb_module *m = leaf(NULL);
  const int64_t shape[1] = {1};
  cr_assert_null(cb_module_add_param(m, "weight", 1, shape, &err));
  cr_assert(strstr(err.msg, "'weight' is already used"), "%s", err.msg);
  cr_assert_eq(cb_module_add_child(m, "weight", leaf(NULL), &err), -1);
  cr_assert_eq(cb_module_add_child(m, "a.b", leaf(NULL), &err), -1);
  cr_assert(strstr(err.msg, "invalid member name 'a.b'"), "%s", err.msg);
  cb_module_free(m);
}

Test(module, repr_like_pytorch) {
  cb_module *net = small_net();
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cb_module_print(net, f);
  fclose(f);
  cr_assert_str_eq(buf, "Net(\n"
                        "  (stem): Sequential(\n"
                        "    (0): Leaf()\n"
                        "    (1): BatchNorm2d()\n"
                        "  )\n"
                        "  (layer1): Sequential(\n"
                        "    (0): Leaf(\n"
                        "      (bn1): BatchNorm2d()\n"
                        "    )\n"
                        "  )\n"
                        ")\n");
  free(buf);
  cb_module_free(net);
}

Test(tensor, shapes_parse_and_format) {
  cb_error err = {0};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cr_assert_eq(cb_shape_parse("1x3x224x224", &ndim, shape, &err), 0);
  cr_assert_eq(ndim, 4);
  cr_assert_eq(shape[3], 224);
  char text[64];
  cb_shape_format(ndim, shape, text, sizeof text);
  cr_assert_str_eq(text, "1x3x224x224");
  cr_assert_eq(cb_shape_parse("1x0x2", &ndim, shape, &err), -1);
  cr_assert_eq(cb_shape_parse("1x3x", &ndim, shape, &err), -1);
  cr_assert_eq(cb_shape_parse("axb", &ndim, shape, &err), -1);
  cr_assert(strstr(err.msg, "shape 'axb'"), "%s", err.msg);
}

Test(tensor, refuses_absurd_sizes) {
  cb_error err = {0};
  const int64_t huge[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
  cr_assert_null(cb_tensor_new(CB_F32, 4, huge, &err));
  cr_assert(strstr(err.msg, "too large"), "%s", err.msg);
  const int64_t negative[2] = {2, -1};
  cr_assert_null(cb_tensor_new(CB_F32, 2, negative, &err));
  cr_assert(strstr(err.msg, "negative"), "%s", err.msg);
  cb_tensor *t = cb_tensor_new(CB_I64, 0, NULL, &err);
  cr_assert_not_null(t);
  cr_assert_eq(cb_tensor_numel(t), 1);
  cb_tensor_free(t);
}

Test(error, prefix_keeps_message) {
  cb_error err = {0};
  cb_fail(&err, "depth: expected 18..152, found %d", 51);
  cb_error_prefix(&err, "%s: ", "configs/a.json");
  cr_assert_str_eq(err.msg, "configs/a.json: depth: expected 18..152, found 51");
}

Test(module, repr_append_formats_in_place_and_truncates) {
  char buf[12];
  size_t len = cb_repr_append(buf, sizeof buf, 0, "%d, %d", 3, 64);
  cr_expect_eq(len, 5);
  cr_expect_str_eq(buf, "3, 64");
  len = cb_repr_append(buf, sizeof buf, len, ", bias=%s", "False");
  cr_expect_eq(len, 17, "the length it would have had");
  cr_expect_str_eq(buf, "3, 64, bias", "truncated to the buffer");
  cr_expect_eq(cb_repr_append(buf, sizeof buf, len, "more"), 17, "a full buffer is left alone");
  cr_expect_str_eq(buf, "3, 64, bias");
}

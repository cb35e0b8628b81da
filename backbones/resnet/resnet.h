/* mmseg's ResNet backbone: shared declarations of the files of resnet.so. */
#ifndef CBRICK_BACKBONES_RESNET_H
#define CBRICK_BACKBONES_RESNET_H

#include <cbrick.h>

#define RESNET_MAX_STAGES 4
#define RESNET_MAX_GRID 64
#define RESNET_NAME 64
#define RESNET_MAX_PLUGINS 16

/* Everything mmseg's ResNet.__init__ takes, validated. JSON values are borrowed from the
 * config being built. */
typedef struct resnet_cfg {
  const char *path; /* "model.backbone" */
  int depth, in_channels, stem_channels, base_channels, num_stages;
  int strides[RESNET_MAX_STAGES], dilations[RESNET_MAX_STAGES];
  bool out_index[RESNET_MAX_STAGES];
  bool caffe, deep_stem, avg_down, norm_eval, contract_dilation, with_cp, zero_init_residual;
  int frozen_stages;
  int groups, base_width; /* ResNeXt's grouped 3x3 convs in Bottlenecks (1 and 4: plain) */
  json_t *conv_cfg, *norm_cfg, *dcn, *plugins, *init_cfg;
  bool stage_with_dcn[RESNET_MAX_STAGES];
  int n_multi_grid; /* 0: no multi_grid */
  int multi_grid[RESNET_MAX_GRID];
  const char *pretrained;
  /* The block of every stage: NULL for BasicBlock / Bottleneck chosen by depth, else the
   * config's `block` (borrowed), built through the RES_BLOCKS registry. */
  json_t *block;
  const char *block_type;
  bool builtin_block; /* block_type is BasicBlock or Bottleneck */
  bool basic;         /* BasicBlock: no after_conv3 plugins, no grouped convs */
  int expansion;      /* a block's output channels per plane */
  int stage_blocks[RESNET_MAX_STAGES];
} resnet_cfg;

/* Reads and checks the arguments. When norm_cfg is absent its default is created and
 * returned in *owned_norm (the caller releases it with json_decref). */
int resnet_cfg_read(cb_args *a, resnet_cfg *cfg, json_t **owned_norm, cb_error *err);
/* `plugins`: a list of {cfg, position, stages?} checked against cfg (with_stages false: a
 * block's own list, from which ResNet has taken out "stages"). */
int resnet_read_plugins(cb_args *a, resnet_cfg *cfg, bool with_stages, cb_error *err);

/* Blocks per stage for a depth (arch_settings), or NULL for an unknown depth. */
const int *resnet_stage_blocks(int depth);
/* Reads `block` (after depth and num_stages): the block type, its expansion and the blocks per
 * stage, from the depth table or the block's own stage_blocks. */
int resnet_block_read(cb_args *a, resnet_cfg *cfg, cb_error *err);
/* style: "pytorch" or "caffe". */
int resnet_read_style(cb_args *a, bool *caffe, cb_error *err);

typedef enum block_type { BLOCK_BASIC, BLOCK_BOTTLENECK } block_type;

typedef enum plugin_position { AFTER_CONV1, AFTER_CONV2, AFTER_CONV3, N_POSITIONS } plugin_position;

/* One block's arguments as ResLayer passes them. */
typedef struct block_spec {
  const resnet_cfg *cfg;
  int inplanes, planes, stride, dilation, stage;
  json_t *dcn; /* this block's DCN conv config (no fallback_on_stride), or NULL */
  bool zero_init;
} block_spec;

/* Block state shared by BasicBlock and Bottleneck. */
typedef struct res_block {
  block_type type;
  char norm[3][RESNET_NAME];
  int n_plugins[N_POSITIONS];
  char plugins[N_POSITIONS][RESNET_MAX_PLUGINS][RESNET_NAME];
  bool zero_init; /* the block's init_cfg: Constant 0 on its last norm */
} res_block;

int block_expansion(block_type type);
/* The RES_BLOCKS entries "BasicBlock" and "Bottleneck" (block_entry.c). */
cb_module *build_basic_block_entry(cb_args *a, cb_error *err);
cb_module *build_bottleneck_entry(cb_args *a, cb_error *err);
/* One block of the config's `block` type through RES_BLOCKS (block_build.c); takes ownership
 * of downsample (may be NULL), also on failure, and adds it as the child "downsample". */
cb_module *registered_block_new(const block_spec *spec, cb_module *downsample, cb_error *err);
bool block_is_builtin(const cb_module *m);
/* Builds one block; takes ownership of downsample (may be NULL), also on failure. */
cb_module *basic_block_new(const block_spec *spec, cb_module *downsample, const char *path,
                           cb_error *err);
cb_module *bottleneck_new(const block_spec *spec, cb_module *downsample, const char *path,
                          cb_error *err);

/* Block pieces (block.c). */
/* Adds a block's convs, norms and ReLU; paths are those of conv_cfg, norm_cfg and dcn, which
 * errors name. */
typedef int (*block_layers_fn)(cb_module *m, const block_spec *s, char (*paths)[512],
                               cb_error *err);
/* A block of ops' kind with its layers and downsample (owned, also on failure), without
 * plugins; NULL on error. */
cb_module *block_with_layers(const cb_module_ops *ops, block_type type, const block_spec *spec,
                             cb_module *downsample, const char *path, block_layers_fn add_layers,
                             cb_error *err);
int block_add_conv(cb_module *m, json_t *conv_cfg, const char *path, const char *name,
                   const cb_conv_spec *spec, cb_error *err);
int block_add_norm(cb_module *m, const resnet_cfg *cfg, const char *path, int channels, int index,
                   cb_error *err);
int block_add_relu(cb_module *m, const char *path, cb_error *err);
int block_add_plugins(cb_module *m, const block_spec *spec, plugin_position pos, int channels,
                      const char *path, cb_error *err);
/* The block's forward and its plan lowering: each conv with its norm, ReLU (but after the
 * last) and the plugins after it, then relu(out + identity or downsample). */
cb_tensor *block_forward(cb_module *m, const cb_tensor *x, cb_error *err);
int block_lower(cb_module *m, cb_plan_builder *b, int x, int *output, cb_error *err);
int block_init_weights(cb_module *m, cb_rng *rng, cb_error *err);

/* ResLayer and the ResNet stem / stages. */
int res_layer_lower(cb_module *m, cb_plan_builder *b, int input, int *output, cb_error *err);

/* ResLayer: a Sequential of blocks; dcn_used tracks the shared fallback_on_stride pop. */
cb_module *res_layer_new(const resnet_cfg *cfg, int stage, int inplanes, bool *dcn_used,
                         cb_error *err);

/* The stem: conv1/norm1/relu children of m, or a "stem" Sequential; then "maxpool".
 * Writes the norm child name into norm1_name. */
int stem_add(cb_module *m, const resnet_cfg *cfg, char *norm1_name, size_t cap, cb_error *err);
/* cb_build of cfg (a fresh json_pack, NULL when it ran out of memory), which it frees. */
cb_module *build_packed(const char *registry, json_t *cfg, const char *path, cb_error *err);
cb_module *build_relu(const char *path, cb_error *err);

#endif

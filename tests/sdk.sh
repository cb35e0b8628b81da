#!/usr/bin/env bash
# Tests of the installed SDK: tests/sdk.sh BUILD_DIR (run from the repository root).
# Installs cbrick into a temporary prefix, builds the examples/ against it out of tree with
# pkg-config alone, and runs them through the installed bin/cbrick. Prints one line per failure
# and ends with "N passed, N failed".
set -u

BUILD=${1:-build}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbrick-sdk.XXXXXX")
TMP=$(cd "$TMP" && pwd -P) # the loader prints real paths
trap 'rm -rf "$TMP"' EXIT
PREFIX="$TMP/prefix"
EX="$TMP/examples"
FIX=tests/fixtures/examples
OUT="$TMP/out"
. "$(dirname "$0")/check.sh"

finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# --- install ---
expect "make install" 0 "" make -s install PREFIX="$PREFIX" BUILD="$BUILD"
if [ "$failed" -ne 0 ]; then finish; fi
for f in lib/libcbrick.so bin/cbrick include/cbrick.h include/cbrick/plugin.h \
  include/cbrick/registry.h lib/pkgconfig/cbrick.pc lib/cbrick/plugins/conv.so \
  lib/cbrick/plugins/resnet.so; do
  ok "installed $f" "[ -f '$PREFIX/$f' ]"
done

export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
CBRICK=(env -u CBRICK_PLUGIN_PATH "$PREFIX/bin/cbrick")
expect "pkg-config --cflags" 0 "-I$PREFIX/include" pkg-config --cflags cbrick
expect "pkg-config --libs" 0 "-lcbrick" pkg-config --libs cbrick
has "jansson comes with it" "-ljansson"
expect "pkg-config plugindir" 0 "$PREFIX/lib/cbrick/plugins" pkg-config --variable=plugindir cbrick

# --- the installed CLI finds its plugins without environment variables ---
expect "installed list" 0 "$PREFIX/lib/cbrick/plugins/conv.so" "${CBRICK[@]}" list
has "installed list has ResNet" "$PREFIX/lib/cbrick/plugins/resnet.so"
lacks "installed list does not use the build tree" "$(cd "$BUILD" && pwd -P)/lib"
cp -a "$PREFIX" "$TMP/moved"
expect "moved prefix list" 0 "$TMP/moved/lib/cbrick/plugins/conv.so" \
  env -u CBRICK_PLUGIN_PATH "$TMP/moved/bin/cbrick" list
lacks "moved prefix uses its own plugins" "$PREFIX/"
rm -rf "$TMP/moved"

# --- the examples, built out of tree against the prefix with their Makefiles ---
mkdir -p "$EX"
cp -r examples/se_block examples/my_resnet examples/compare_outputs "$EX/"
rm -f "$EX"/*/*.so "$EX/compare_outputs/compare_outputs"
# An instrumented library (make test-asan) needs the sanitizer runtime first in the program.
EX_CFLAGS="-O2 -Wall -Wextra -Werror"
if ldd "$PREFIX/lib/libcbrick.so" 2>/dev/null | grep -q libasan; then
  EX_CFLAGS="$EX_CFLAGS -fsanitize=address,undefined"
fi
for ex in se_block my_resnet compare_outputs; do
  expect "build $ex" 0 "" make -s -C "$EX/$ex" CFLAGS="$EX_CFLAGS"
done
ok "se_block.so built" "[ -f '$EX/se_block/se_block.so' ]"
ok "my_resnet.so built" "[ -f '$EX/my_resnet/my_resnet.so' ]"
expect "the one-line plugin build" 0 "" sh -c \
  "cd '$EX/se_block' && cc -shared -fPIC \$(pkg-config --cflags cbrick) se_block.c -o one_line.so"
ok "one-line build gives a plugin" "[ -f '$EX/se_block/one_line.so' ]"
rm -f "$EX/se_block/one_line.so"
COMPARE="$EX/compare_outputs/compare_outputs"

# --- SEBlock against PyTorch ---
SE="$EX/se_block/config.json"
expect "SE run with PyTorch weights" 0 "feat.3: 2x128x2x2" "${CBRICK[@]}" run "$SE" \
  --weights "$FIX/se_resnet.safetensors" --prefix backbone. --input "$FIX/se_resnet_input.npy" \
  --output "$TMP/se_out.safetensors"
expect "SE outputs equal PyTorch's" 0 "max relative L2" "$COMPARE" "$FIX/se_resnet.safetensors" \
  out. "$TMP/se_out.safetensors" feat. 1e-4
grep -F "max relative L2" "$OUT" | sed 's/^/SEBlock ResNet-50 vs PyTorch (plan): /'
expect "SE reference run" 0 "feat.3: 2x128x2x2" "${CBRICK[@]}" run "$SE" --reference \
  --weights "$FIX/se_resnet.safetensors" --prefix backbone. --input "$FIX/se_resnet_input.npy" \
  --output "$TMP/se_ref.safetensors"
expect "SE reference outputs equal PyTorch's" 0 "max relative L2" "$COMPARE" \
  "$FIX/se_resnet.safetensors" out. "$TMP/se_ref.safetensors" feat. 1e-4
grep -F "max relative L2" "$OUT" | sed 's/^/SEBlock ResNet-50 vs PyTorch (reference): /'
expect "SE build shows the layer" 0 "(se_block): SEBlock(" "${CBRICK[@]}" build "$SE"
has "SE convs come from CONV_LAYERS" "(conv1): Conv2d(16, 4, kernel_size=(1, 1), stride=(1, 1))"
expect "SE list with --plugin" 0 "$EX/se_block/se_block.so" "${CBRICK[@]}" \
  --plugin "$EX/se_block/se_block.so" list PLUGIN_LAYERS
has "SE list names the type" "SEBlock"
expect "SE list from CBRICK_PLUGIN_PATH" 0 "$EX/se_block/se_block.so" \
  env CBRICK_PLUGIN_PATH="$EX/se_block" "$PREFIX/bin/cbrick" list PLUGIN_LAYERS
expect "SE postfix names the child" 0 "(se_block2): SEBlock(" "${CBRICK[@]}" build "$SE" \
  --cfg-options 'model.backbone.plugins.0.cfg.postfix=2'
expect "SE ratio checked" 1 "model.backbone.plugins[0].cfg.ratio" "${CBRICK[@]}" build "$SE" \
  --cfg-options 'model.backbone.plugins.0.cfg.ratio=0'
expect "SE unknown key refused" 1 "model.backbone.plugins[0].cfg.ratoi" "${CBRICK[@]}" build \
  "$SE" --cfg-options 'model.backbone.plugins.0.cfg.ratoi=4'

# The same plugin under a second file name: a clear error naming both files.
cp "$EX/se_block/se_block.so" "$EX/se_block/se_block_copy.so"
sed 's/"se_block.so"/"se_block.so", "se_block_copy.so"/' "$SE" >"$EX/se_block/twice.json"
expect "SE loaded twice" 1 "SEBlock is already registered" "${CBRICK[@]}" build \
  "$EX/se_block/twice.json"
has "duplicate names the first file" "$EX/se_block/se_block.so"
has "duplicate names the second file" "$EX/se_block/se_block_copy.so"
# The same file imported twice is loaded once.
sed 's/"se_block.so"/"se_block.so", "se_block"/' "$SE" >"$EX/se_block/same.json"
expect "SE same file twice" 0 "parameters: " "${CBRICK[@]}" build "$EX/se_block/same.json"

# --- MyResNet: a backbone variant ---
MY="$EX/my_resnet/config.json"
expect "MyResNet run" 0 "feat.1: 1x256x8x8" "${CBRICK[@]}" run "$MY" --shape 1x3x64x64 \
  --seed 3 --output "$TMP/my.safetensors"
has "MyResNet default out_indices [2, 3]" "feat.0: 1x128x8x8"
lacks "MyResNet returns two stages" "feat.2"
expect "MyResNet deep stem" 0 "(stem): Sequential(" "${CBRICK[@]}" build "$MY"
has "MyResNet avg_down" "AvgPool2d(kernel_size=2, stride=2"
has "MyResNet dilated stage 4" "dilation=(4, 4)"
expect "MyResNet refuses deep_stem" 1 "model.backbone.deep_stem: MyResNet sets deep_stem itself" \
  "${CBRICK[@]}" build "$MY" --cfg-options model.backbone.deep_stem=false
expect "MyResNet refuses avg_down" 1 "model.backbone.avg_down" "${CBRICK[@]}" build "$MY" \
  --cfg-options model.backbone.avg_down=true
expect "MyResNet defaults yield to the config" 0 "feat.3: 1x256x2x2" "${CBRICK[@]}" build "$MY" \
  --shape 1x3x64x64 --cfg-options 'model.backbone.out_indices=[0,1,2,3]' \
  'model.backbone.strides=[1,2,2,2]' 'model.backbone.dilations=[1,1,1,1]'
expect "MyResNet unknown key" 1 "model.backbone.dpeth" "${CBRICK[@]}" build "$MY" \
  --cfg-options model.backbone.dpeth=50
cat >"$TMP/resnet_equivalent.json" <<'EOF'
{"model": {"backbone": {"type": "ResNet", "depth": 50, "stem_channels": 16, "base_channels": 8,
  "deep_stem": true, "avg_down": true, "strides": [1, 2, 1, 1], "dilations": [1, 1, 2, 4],
  "contract_dilation": true, "out_indices": [2, 3]}}}
EOF
expect "equivalent ResNet run" 0 "" "${CBRICK[@]}" run "$TMP/resnet_equivalent.json" \
  --shape 1x3x64x64 --seed 3 --output "$TMP/equivalent.safetensors"
expect "MyResNet is that ResNet" 0 "max relative L2 0" "$COMPARE" "$TMP/equivalent.safetensors" \
  feat. "$TMP/my.safetensors" feat. 0
expect "MyResNet reference run" 0 "" "${CBRICK[@]}" run "$MY" --reference --shape 1x3x64x64 \
  --seed 3 --output "$TMP/my_ref.safetensors"
expect "MyResNet reference equals the plan" 0 "max relative L2" "$COMPARE" \
  "$TMP/my_ref.safetensors" feat. "$TMP/my.safetensors" feat. 1e-4

finish

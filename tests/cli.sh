#!/usr/bin/env bash
# Tests of the cbrick command-line tool: tests/cli.sh BUILD_DIR (run from the repository root).
# Prints one line per failure and ends with "N passed, N failed".
set -u

BUILD=${1:-build}
CBRICK="$BUILD/bin/cbrick"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbrick-cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT="$TMP/out"
. "$(dirname "$0")/check.sh"

# A .npy float32 array of zeros: npy FILE N C H W.
npy_zeros() {
  local header="{'descr': '<f4', 'fortran_order': False, 'shape': ($2, $3, $4, $5), }"
  local len=$(((10 + ${#header} + 1 + 63) / 64 * 64 - 10))
  {
    printf '\x93NUMPY\x01\x00'
    printf "\\x$(printf %02x $((len % 256)))\\x$(printf %02x $((len / 256)))"
    printf '%s' "$header"
    printf '%*s\n' $((len - ${#header} - 1)) ''
    head -c $(($2 * $3 * $4 * $5 * 4)) /dev/zero
  } >"$1"
}

if [ ! -x "$CBRICK" ]; then
  echo "FAIL: $CBRICK is not built"
  echo "0 passed, 1 failed"
  exit 1
fi

cat >"$TMP/r18.json" <<'EOF'
{"model": {"type": "EncoderDecoder",
           "backbone": {"type": "ResNet", "depth": 18, "out_indices": [0, 1, 2, 3]}},
 "note": 0.1}
EOF
cat >"$TMP/child.json" <<'EOF'
{"_base_": "r18.json", "model": {"backbone": {"depth": 34}}}
EOF
cat >"$TMP/typo.json" <<'EOF'
{"model": {"backbone": {"type": "ResNeet", "depth": 18}}}
EOF
cat >"$TMP/nobackbone.json" <<'EOF'
{"model": {"type": "EncoderDecoder"}}
EOF
printf '{"model": {"backbone": {"type": "ResNet",, "depth": 18}}}\n' >"$TMP/bad.json"

# --- usage ---
expect "help" 0 "usage: cbrick" "$CBRICK" --help
expect "no command" 2 "usage" "$CBRICK"
expect "unknown command" 2 "unknown command 'frobnicate'" "$CBRICK" frobnicate
expect "run without input" 2 "exactly one of --input, --shape and --image" "$CBRICK" run \
  "$TMP/r18.json"
expect "resize without image" 2 "--resize and --pad need --image" "$CBRICK" run "$TMP/r18.json" \
  --shape 1x3x8x8 --resize 8x8
expect "run unknown option" 2 "unknown option '--bogus'" "$CBRICK" run "$TMP/r18.json" --bogus
expect "cfg-options without values" 2 "--cfg-options needs" "$CBRICK" config "$TMP/r18.json" \
  --cfg-options
expect "bad seed" 2 "--seed" "$CBRICK" build "$TMP/r18.json" --seed x1
expect "bad output extension" 2 ".safetensors or .npy" "$CBRICK" run "$TMP/r18.json" \
  --shape 1x3x32x32 --output "$TMP/out.bin"

# --- list ---
expect "list" 0 "BACKBONES" "$CBRICK" list
has "list names ResNet" "ResNet"
has "list names providers" ".so"
has "list shows CONV_LAYERS" "CONV_LAYERS"
expect "list one registry (global option after)" 0 "ResNet" "$CBRICK" list BACKBONES --quiet
lacks "list one registry" "CONV_LAYERS"
if [ -f "$BUILD/tests/plugins/scale_layer.so" ]; then
  expect "list with --plugin" 0 "scale_layer.so" "$CBRICK" list --plugin \
    "$BUILD/tests/plugins/scale_layer.so"
  has "list with --plugin names the type" "Scale"
  expect "duplicate registration" 1 "already registered" "$CBRICK" \
    --plugin "$BUILD/tests/plugins/duplicate_scale.so" list \
    --plugin "$BUILD/tests/plugins/scale_layer.so"
  # An out-of-tree plugin named by custom_imports, inserted into every bottleneck.
  mkdir -p "$TMP/own"
  cp "$BUILD/tests/plugins/scale_layer.so" "$TMP/own/"
  cat >"$TMP/own/scaled.json" <<JSON
{"_base_": "$PWD/configs/resnet/resnet50_v1b.json",
 "custom_imports": {"imports": ["scale_layer.so"], "allow_failed_imports": false},
 "model": {"backbone": {"base_channels": 8, "stem_channels": 8,
   "plugins": [{"cfg": {"type": "Scale", "init": 2.0}, "position": "after_conv3",
                "stages": [false, true, true, true]}]}}}
JSON
  expect "custom_imports plugin in a model" 0 "(scale): Scale()" "$CBRICK" build \
    "$TMP/own/scaled.json" --shape 1x3x32x32
  ok "one Scale per block of stages 2-4" '[ "$(grep -c "(scale): Scale()" "$OUT")" -eq 13 ]'
  expect "custom_imports plugin runs" 0 "feat.3: 1x256x1x1" "$CBRICK" --quiet run \
    "$TMP/own/scaled.json" --shape 1x3x32x32
fi
expect "list unknown registry" 1 "unknown registry 'NOPE'" "$CBRICK" list NOPE
has "list unknown registry lists known ones" "BACKBONES"
case "$(head -c 8 "$OUT")" in "cbrick: ") passed=$((passed + 1)) ;; *) fail "error prefix" ;; esac

# --- config ---
expect "config resolves _base_" 0 '"depth": 34' "$CBRICK" config "$TMP/child.json"
has "config keeps base keys" '"out_indices"'
has "config prints reals shortest" '"note": 0.1'
expect "config options" 0 '"depth": 50' "$CBRICK" config "$TMP/r18.json" \
  --cfg-options model.backbone.depth=50 model.backbone.norm_eval=True --cfg-options x.y=[1,2]
has "config several options after one flag" '"norm_eval": true'
has "config repeated flag" '"y": ['
expect "config missing file" 1 "$TMP/missing.json" "$CBRICK" config "$TMP/missing.json"
expect "config bad option" 1 "model.backbone.out_indices" "$CBRICK" config "$TMP/r18.json" \
  --cfg-options model.backbone.out_indices.9=1
expect "config bad JSON" 1 "bad.json" "$CBRICK" config "$TMP/bad.json"
has "config bad JSON names the line" "bad.json:1:"

# --- build ---
expect "build with shape" 0 "feat.3: 1x512x2x2" "$CBRICK" build "$TMP/r18.json" --shape 1x3x64x64
has "build prints the repr" "(layer1): ResLayer("
has "build prints parameters" "parameters: 11176512"
has "build prints every output" "feat.0: 1x64x16x16"
expect "build options" 0 "parameters: 21284672" "$CBRICK" build "$TMP/r18.json" \
  --cfg-options model.backbone.depth=34
expect "build without backbone" 1 "nobackbone.json: model.backbone: missing" "$CBRICK" build \
  "$TMP/nobackbone.json"
expect "unknown backbone type" 1 "typo.json" "$CBRICK" build "$TMP/typo.json"
has "unknown backbone suggests" "ResNet"
has "unknown backbone names the registry" "BACKBONES"
expect "missing plugin file" 1 "$TMP/nope.so" "$CBRICK" --plugin "$TMP/nope.so" build \
  "$TMP/r18.json"
expect "missing config for build" 1 "missing.json" "$CBRICK" build "$TMP/missing.json"

# --- run ---
expect "run writes safetensors" 0 "feat.3: 1x512x2x2" "$CBRICK" run "$TMP/r18.json" \
  --shape 1x3x64x64 --seed 3 --output "$TMP/out.safetensors" --save-weights "$TMP/w.safetensors"
has "run prints mean and std" "mean="
ok "run prints one line per output" "[ \$(grep -c '^feat\\.' '$OUT') -eq 4 ]"
grep '^feat\.' "$OUT" >"$TMP/summary_init"
ok "output file exists" "[ -s '$TMP/out.safetensors' ]"
names=$(head -c 4096 "$TMP/out.safetensors" | grep -ao '"feat\.[0-9]"' | wc -l)
ok "output holds four tensors" "[ $names -eq 4 ]"
# 8-byte header length, then the header, then 4 * (64*16*16 + 128*8*8 + 256*4*4 + 512*2*2) bytes.
hlen=$(od -An -t u8 -N 8 "$TMP/out.safetensors" | tr -d ' ')
size=$(stat -c %s "$TMP/out.safetensors")
ok "output size matches its header" "[ $size -eq $((8 + hlen + 4 * (16384 + 8192 + 4096 + 2048))) ]"
ok "saved weights exist" "[ -s '$TMP/w.safetensors' ]"

expect "run same seed is reproducible" 0 "feat.0" "$CBRICK" run "$TMP/r18.json" --shape 1x3x64x64 \
  --seed 3
ok "same seed, same outputs" "grep '^feat\\.' '$OUT' | cmp -s - '$TMP/summary_init'"
expect "run another seed" 0 "feat.0" "$CBRICK" run "$TMP/r18.json" --shape 1x3x64x64 --seed 4
ok "another seed, other outputs" "! grep '^feat\\.' '$OUT' | cmp -s - '$TMP/summary_init'"

expect "run loads weights" 0 "feat.0" "$CBRICK" run "$TMP/r18.json" --shape 1x3x64x64 --seed 3 \
  --weights "$TMP/w.safetensors"
ok "loaded weights give the same outputs" "grep '^feat\\.' '$OUT' | cmp -s - '$TMP/summary_init'"
expect "run weights strict refuses other depth" 1 "shape mismatch" "$CBRICK" run "$TMP/r18.json" \
  --cfg-options model.backbone.depth=34 --shape 1x3x32x32 --weights "$TMP/w.safetensors"
has "strict failure summary" "missing, 0 unexpected"
has "strict failure names the weights" "w.safetensors"
expect "run weights non-strict" 0 "missing key: layer1.2.conv1.weight" "$CBRICK" run \
  "$TMP/r18.json" --cfg-options model.backbone.depth=34 --shape 1x3x32x32 \
  --weights "$TMP/w.safetensors" --non-strict
expect "run weights wrong prefix" 1 "prefix 'backbone.'" "$CBRICK" run "$TMP/r18.json" \
  --shape 1x3x32x32 --weights "$TMP/w.safetensors" --prefix backbone.
expect "run weights from a bad file" 1 "bad.json" "$CBRICK" run "$TMP/r18.json" \
  --shape 1x3x32x32 --weights "$TMP/bad.json"

npy_zeros "$TMP/x.npy" 1 3 32 32
expect "run npy input, npy outputs" 0 "feat.3: 1x512x1x1" "$CBRICK" run "$TMP/r18.json" \
  --input "$TMP/x.npy" --output "$TMP/y.npy"
ok "one npy per output" "[ -s '$TMP/y.0.npy' ] && [ -s '$TMP/y.3.npy' ] && [ ! -e '$TMP/y.npy' ]"
expect "run single output npy" 0 "feat.0: 1x512x1x1" "$CBRICK" run "$TMP/r18.json" \
  --input "$TMP/x.npy" --cfg-options "model.backbone.out_indices=(3,)" --output "$TMP/z.npy"
ok "single output writes OUT.npy" "[ -s '$TMP/z.npy' ] && [ ! -e '$TMP/z.0.npy' ]"
expect "run train mode" 0 "feat.0" "$CBRICK" run "$TMP/r18.json" --shape 2x3x32x32 --train
expect "channel mismatch" 1 "channels" "$CBRICK" run "$TMP/r18.json" --shape 1x4x32x32
has "channel mismatch names the config" "r18.json"
npy_zeros "$TMP/x4.npy" 1 4 16 16
expect "channel mismatch from npy" 1 "channels" "$CBRICK" run "$TMP/r18.json" --input "$TMP/x4.npy"
expect "run bad npy" 1 "r18.json" "$CBRICK" run "$TMP/r18.json" --input "$TMP/r18.json"
has "run bad npy says why" "bad magic"
expect "run bad shape" 1 "--shape" "$CBRICK" run "$TMP/r18.json" --shape 1xAx3

# --- pictures in, heat maps out ---
expect "run on an image" 0 "feat.3: 1x2048x2x3" "$CBRICK" --quiet run configs/resnet/resnet50_v1b.json \
  --image tests/data/images/scene.jpg --resize 48x80 --viz "$TMP/viz"
ok "heat maps written" '[ -s "$TMP/viz/feat.0.png" ] && [ -s "$TMP/viz/feat.3.png" ]'
expect "heat map is a picture" 0 "feat.0: 1x64x66x110" "$CBRICK" --quiet run \
  configs/resnet/resnet18_v1b.json --image "$TMP/viz/feat.0.png"
expect "padded image" 0 "feat.0: 1x256x16x16" "$CBRICK" --quiet run \
  configs/resnet/resnet50_v1b.json --image tests/data/images/scene.png --resize 60x60 --pad 64x64
expect "pad smaller than image" 1 "smaller than the image" "$CBRICK" run \
  configs/resnet/resnet50_v1b.json --image tests/data/images/scene.png --pad 64x64
expect "bad --resize" 1 "--resize: expected HxW" "$CBRICK" run configs/resnet/resnet50_v1b.json \
  --image tests/data/images/scene.png --resize 1x2x3
expect "image that is not one" 1 "not a PNG or JPEG file" "$CBRICK" run \
  configs/resnet/resnet50_v1b.json --image Makefile

# --- checkpoints: inspect and convert ---
expect "inspect pth" 0 "backbone.layer1.0.conv1.weight" "$CBRICK" inspect tests/fixtures/pth/mmseg.pth
has "inspect shows int64 scalars" "int64    scalar"
expect "convert with prefix" 0 "15 tensors written" "$CBRICK" convert tests/fixtures/pth/mmseg.pth \
  "$TMP/m.safetensors" --prefix backbone
expect "inspect converted" 0 "source: tests/fixtures/pth/mmseg.pth" "$CBRICK" inspect "$TMP/m.safetensors"
has "prefix stripped" "layer1.0.conv1.weight"
lacks "no key keeps the prefix" "backbone."
expect "convert unknown prefix" 1 "no key starts with the prefix 'neck'" "$CBRICK" convert \
  tests/fixtures/pth/mmseg.pth "$TMP/n.safetensors" --prefix neck
expect "convert revises keys" 0 "16 tensors written" "$CBRICK" convert tests/fixtures/pth/mmseg.pth \
  "$TMP/r.safetensors" --revise '^backbone\.=net.' --revise 'layer(\d)=stage\1'
expect "revised keys" 0 "net.stage1.0.conv1.weight" "$CBRICK" inspect "$TMP/r.safetensors"
expect "convert bad regex" 1 "--revise: " "$CBRICK" convert tests/fixtures/pth/mmseg.pth \
  "$TMP/r.safetensors" --revise '(=x'
has "bad regex says why" "invalid regular expression"
expect "convert revise needs =" 2 "PATTERN=REPLACEMENT" "$CBRICK" convert \
  tests/fixtures/pth/mmseg.pth "$TMP/r.safetensors" --revise nothing
expect "convert strips module." 0 "written" "$CBRICK" convert tests/fixtures/pth/dataparallel.pth \
  "$TMP/d.safetensors" --strip-module
expect "hostile pickle refused" 1 "refusing to load global 'os.system'" "$CBRICK" inspect \
  tests/fixtures/pth/evil_os_system.pth
expect "convert needs .safetensors" 2 "OUT must end in .safetensors" "$CBRICK" convert \
  tests/fixtures/pth/mmseg.pth "$TMP/x.pth"
expect "weights from a checkpoint with foreign keys" 1 "missing" "$CBRICK" run \
  configs/resnet/resnet18_v1b.json --shape 1x3x32x32 --weights tests/fixtures/pth/mmseg.pth \
  --prefix backbone

# --- bench ---
expect "bench json" 0 '"median_ms": ' "$CBRICK" --quiet bench "$TMP/r18.json" --shape 1x3x64x64 \
  --iters 2 --warmup 1 --json
for key in min_ms max_ms gflops peak_rss_bytes '"isa": "'; do has "bench json has $key" "$key"; done
expect "bench portable kernels" 0 '"isa": "portable"' env CBRICK_ISA=portable "$CBRICK" --quiet \
  bench "$TMP/r18.json" --shape 1x3x64x64 --iters 1 --warmup 0 --json
expect "bench profile" 0 "layer4.1.conv2" "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 2 --warmup 0 --profile
has "bench profile total" "total"
has "bench names its kernels" " kernels"
stem_kernel="column, padded"
"$CBRICK" --quiet bench "$TMP/r18.json" --shape 1x3x64x64 --iters 1 --warmup 0 --json |
  grep -qF '"isa": "portable"' && stem_kernel="blas"
has "profile names each conv's kernel" "conv+relu      $stem_kernel"
expect "profile under the portable path" 0 "conv+relu      blas" env CBRICK_ISA=portable \
  "$CBRICK" --quiet bench "$TMP/r18.json" --shape 1x3x64x64 --iters 1 --warmup 0 --profile
# idle_within THREADS: the last profile's total idle time is at most (THREADS - 1) x its time.
idle_within() {
  awk -v t="$1" '$1 == "total" { found = 1; bad = $NF < 0 || $NF > (t - 1) * $2 + 0.001 }
    END { exit !(found && !bad) }' "$OUT"
}
expect "profile counts idle threads" 0 "idle ms" "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 2 --warmup 0 --threads 2 --profile
ok "two threads' idle time within theirs" "idle_within 2"
expect "profile on one thread" 0 "idle ms" "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 1 --warmup 0 --threads 1 --profile
ok "one thread is never idle" "idle_within 1"
expect "bench reference" 0 "reference forward" "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x32x32 --iters 1 --warmup 0 --reference
expect "bench bad iters" 2 "--iters" "$CBRICK" bench "$TMP/r18.json" --shape 1x3x64x64 --iters x
expect "bench ab" 0 "B (CBRICK_WINOGRAD=0, " "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 2 --warmup 0 --ab CBRICK_WINOGRAD=0
has "bench ab ratio" "B/A: median over the iterations"
expect "bench ab json" 0 '"ab": "CBRICK_ISA=portable"' "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 3 --warmup 1 --ab CBRICK_ISA=portable --json
for key in a_median_ms a_min_ms b_median_ms b_min_ms ratio_median; do
  has "bench ab json has $key" "\"$key\": "
done
has "bench ab: B compiled with the variable" '"b_isa": "portable"'
if ! grep -qF '"isa": "portable"' <("$CBRICK" --quiet bench "$TMP/r18.json" --shape 1x3x64x64 \
  --iters 1 --warmup 0 --json); then
  lacks "bench ab: A compiled without it" '"a_isa": "portable"'
fi
expect "bench ab: A compiled under the environment as it is" 0 '"a_isa": "portable"' \
  env CBRICK_ISA=portable "$CBRICK" --quiet bench "$TMP/r18.json" --shape 1x3x64x64 --iters 1 \
  --warmup 0 --ab CBRICK_WINOGRAD=0 --json
expect "bench ab without =" 2 "--ab: expected NAME=VALUE" "$CBRICK" bench "$TMP/r18.json" \
  --ab CBRICK_WINOGRAD
expect "bench ab without a name" 2 "found '=0'" "$CBRICK" bench "$TMP/r18.json" --ab =0
expect "bench ab with reference" 2 "--ab times two compiled plans" "$CBRICK" bench \
  "$TMP/r18.json" --ab CBRICK_WINOGRAD=0 --reference
expect "bench ab with peak" 2 "--ab times two compiled plans" "$CBRICK" bench \
  "$TMP/r18.json" --ab CBRICK_WINOGRAD=0 --peak
if [ "$stem_kernel" != blas ]; then
  expect "bench peak json" 0 '"peak_gflops": ' "$CBRICK" bench --peak --threads 1 --json
  lacks "bench peak: no round trip on one thread" "round_trip_ns"
  if [ "$(nproc)" -ge 2 ]; then
    expect "bench peak on two threads" 0 "cache-line round trip between two threads: " \
      "$CBRICK" bench --peak --threads 2
    ok "the round trip is a number of ns" "grep -Eq 'two threads: [1-9][0-9]* ns' \"\$OUT\""
  fi
fi
expect "bench ab profile" 0 "kernel B" "$CBRICK" --quiet bench "$TMP/r18.json" \
  --shape 1x3x64x64 --iters 2 --warmup 0 --ab CBRICK_WINOGRAD=0 --profile
has "bench ab profile names the nodes" "layer4.1.conv2"
if [ "$stem_kernel" != blas ]; then
  ok "bench ab profile: a conv on Winograd in A only" \
    "grep -Eq '^layer1[.]0[.]conv1 +winograd F[(][234]x[234][)] +(column|small-map)' \"\$OUT\""
fi
expect "bench ab profile json" 0 '"nodes": [{"name": "conv1", "a_kernel": ' "$CBRICK" --quiet \
  bench "$TMP/r18.json" --shape 1x3x64x64 --iters 2 --warmup 0 --ab CBRICK_WINOGRAD=0 \
  --profile --json
has "bench ab profile json pairs the nodes" '"b_ms": '

# --- shipped configs: each resolves and builds ---
shipped=0
while IFS= read -r cfg; do
  shipped=$((shipped + 1))
  expect "config $cfg" 0 "" "$CBRICK" config "$cfg"
  if grep -qF '"backbone"' "$OUT"; then
    expect "build $cfg" 0 "parameters: " "$CBRICK" --quiet build "$cfg"
    expect "run $cfg" 0 "forward: " "$CBRICK" --quiet run "$cfg" --shape 1x3x32x32
  fi
done < <(find configs -name '*.json' -not -path '*/_base_/*' 2>/dev/null | sort)
[ "$shipped" -eq 0 ] && echo "note: no shipped configs found under configs/"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

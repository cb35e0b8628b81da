#!/usr/bin/env bash
# make check-baseline: the build runs on a plain x86-64 processor (no SSE4, no AVX) and
# computes there what it computes natively on the same path. Runs `cbrick run` of a
# ResNet-18 under qemu-user's qemu64 model and natively with CBRICK_ISA=portable, and
# compares the two outputs byte for byte. Needs qemu-user (apt-get install qemu-user).
# OpenBLAS is held at its Prescott kernels on both sides: its own detection takes qemu64 for
# a Haswell.
set -eu
BUILD=${1:-build}
QEMU=$(command -v qemu-x86_64 || true)
if [ -z "$QEMU" ]; then
  echo "check-baseline: qemu-x86_64 not found (apt-get install qemu-user)"
  exit 1
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cbrick-baseline.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/r18.json" <<'JSON'
{"model": {"type": "EncoderDecoder",
           "backbone": {"type": "ResNet", "depth": 18, "out_indices": [0, 1, 2, 3]}}}
JSON
export OPENBLAS_CORETYPE=Prescott CBRICK_NUM_THREADS=1
args=(--quiet run "$TMP/r18.json" --shape 1x3x64x64 --seed 3 --threads 1)
CBRICK_ISA=portable "$BUILD/bin/cbrick" "${args[@]}" --output "$TMP/native.safetensors" >/dev/null
"$QEMU" -cpu qemu64 "$BUILD/bin/cbrick" "${args[@]}" --output "$TMP/qemu64.safetensors" \
  >"$TMP/qemu.log" 2>&1 || { cat "$TMP/qemu.log"; echo "FAIL: cbrick under qemu64"; exit 1; }
if ! cmp -s "$TMP/native.safetensors" "$TMP/qemu64.safetensors"; then
  echo "FAIL: outputs under qemu64 differ from the native portable path"
  exit 1
fi
echo "ok   ResNet-18 under qemu64 (plain x86-64): outputs identical to the native portable path"

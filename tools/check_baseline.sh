#!/usr/bin/env bash
# make check-baseline: the build on processors older than this one, emulated by qemu-user: a
# plain x86-64 one (qemu64: no SSE4, no AVX) must run the portable path and a Haswell (AVX2,
# no AVX-512) the AVX2 kernels, each computing byte for byte what the same path computes
# natively (CBRICK_ISA). Runs `cbrick run` of a ResNet-18 on one thread. Needs qemu-user.
# OpenBLAS is held at one kernel set per pair: its own detection takes qemu64 for a Haswell.
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
export CBRICK_NUM_THREADS=1
args=(--quiet run "$TMP/r18.json" --shape 1x3x64x64 --seed 3 --threads 1)
failed=0
# emulated processor, the path it must take, OpenBLAS's kernels
for case in "qemu64 portable Prescott" "Haswell-v4 avx2 Haswell"; do
  read -r cpu isa blas <<<"$case"
  export OPENBLAS_CORETYPE=$blas
  CBRICK_ISA=$isa "$BUILD/bin/cbrick" "${args[@]}" --output "$TMP/native.safetensors" >/dev/null
  if ! "$QEMU" -cpu "$cpu" "$BUILD/bin/cbrick" "${args[@]}" --output "$TMP/emulated.safetensors" \
    >"$TMP/qemu.log" 2>&1; then
    grep -v "TCG doesn't support" "$TMP/qemu.log" || true
    echo "FAIL: cbrick under qemu's $cpu"
    failed=1
  elif ! cmp -s "$TMP/native.safetensors" "$TMP/emulated.safetensors"; then
    echo "FAIL: outputs under qemu's $cpu differ from the native $isa path"
    failed=1
  else
    echo "ok   ResNet-18 under qemu's $cpu: outputs identical to the native $isa path"
  fi
done
exit $failed

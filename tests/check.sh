# Assertions for the shell tests (sourced by tests/cli.sh and tests/sdk.sh). The sourcing
# script sets OUT (a file for command output) and reports "$passed passed, $failed failed".
passed=0
failed=0

fail() {
  failed=$((failed + 1))
  echo "FAIL: $1"
  [ -f "$OUT" ] && sed 's/^/    | /' "$OUT" | head -20
}

# expect NAME RC PATTERN CMD...: runs CMD (stdout and stderr into $OUT), wants exit status RC
# and, unless PATTERN is empty, the fixed string PATTERN in the output.
expect() {
  local name=$1 want=$2 pattern=$3
  shift 3
  "$@" >"$OUT" 2>&1
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "$name: exit status $rc, expected $want"
  elif [ -n "$pattern" ] && ! grep -qF -- "$pattern" "$OUT"; then
    fail "$name: output lacks '$pattern'"
  else
    passed=$((passed + 1))
  fi
}

# has NAME PATTERN: the last command's output contains PATTERN.
has() {
  if grep -qF -- "$2" "$OUT"; then passed=$((passed + 1)); else fail "$1: output lacks '$2'"; fi
}

# lacks NAME PATTERN: the last command's output does not contain PATTERN.
lacks() {
  if grep -qF -- "$2" "$OUT"; then fail "$1: output has '$2'"; else passed=$((passed + 1)); fi
}

# ok NAME EXPR: EXPR (a shell condition) holds.
ok() {
  if eval "$2"; then passed=$((passed + 1)); else fail "$1: $2"; fi
}

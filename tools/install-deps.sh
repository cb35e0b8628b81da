#!/bin/sh
# Installs the Debian packages cbrick builds and tests with.
# --if-missing: do nothing when every header is already there.
set -e
PKGS="build-essential pkg-config libjansson-dev libcriterion-dev libopenblas-dev libpng-dev libjpeg-dev"
have_all() {
  for h in jansson.h criterion/criterion.h; do
    [ -f "/usr/include/$h" ] || return 1
  done
  pkg-config --exists jansson openblas libpng libjpeg 2>/dev/null || return 1
  command -v cc >/dev/null 2>&1 || return 1
}
if [ "$1" = "--if-missing" ] && have_all; then
  exit 0
fi
echo "cbrick: installing build dependencies: $PKGS" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $PKGS >/dev/null

#!/usr/bin/env bash
# Installs vufront's client library from BUILD_DIR into a temporary prefix,
# builds tests/package against it with find_package(vufront), and runs it.
#   check.sh SOURCE_DIR BUILD_DIR [FLAGS]
# FLAGS: compiler and linker flags the library was built with that a program
# linking it needs too (the sanitizers).
set -euo pipefail
src=$1 build=$2 flags=${3:-}
work=$(mktemp -d /tmp/vufront-package-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/lib/cmake/vufront/vufrontConfig.cmake"
test -f "$work/prefix/include/vufront/control/client.hpp"
cmake -S "$src/tests/package" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$work/build" >/dev/null
set +e
out=$("$work/build/consumer" "$work/nobody.ctl")
status=$?
set -e
echo "$out"
[ "$status" -eq 3 ] || { echo "expected exit 3, got $status"; exit 1; }
grep -q 'timeout: nobody listens' <<<"$out"
echo "package consumer: ok"

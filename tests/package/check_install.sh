#!/usr/bin/env bash
# `cmake --install` of BUILD_DIR into a temporary prefix, checked as an
# operator and a VMM author would use it (dist/README.md):
#   * the three programs run from the prefix (--version);
#   * each has a man page that renders without a warning;
#   * each has a bash completion that loads and completes (subcommands,
#     options, an option's values);
#   * the pkg-config module vufront names the prefix, and tests/package/main.cpp
#     (control/client.hpp) compiles, links and runs with its flags alone.
#   check_install.sh SOURCE_DIR BUILD_DIR [FLAGS]
# FLAGS: compiler and linker flags the library was built with (the sanitizers).
set -euo pipefail
src=$1 build=$2 flags=${3:-}
work=$(mktemp -d /tmp/vufront-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
programs=(vufront vufront-backend vufront-example-vmm)
fail() { echo "FAIL: $*"; exit 1; }

for p in "${programs[@]}"; do
  version=$("$prefix/bin/$p" --version) || fail "$p --version exited $?"
  [[ $version == "$p "[0-9]* ]] || fail "$p --version printed '$version'"
done
echo "programs: ok (${programs[*]})"

# A man page renders without a warning: man -l if man-db is there, groff else.
render() {
  if command -v man >/dev/null; then
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$1"
  else
    LC_ALL=C.UTF-8 groff -man -Tutf8 -ww "$1"
  fi
}
for p in "${programs[@]}"; do
  page=$prefix/share/man/man1/$p.1
  [ -f "$page" ] || fail "no man page $page"
  render "$page" >"$work/page.txt" 2>"$work/warnings.txt" || fail "rendering $p.1 failed"
  [ ! -s "$work/warnings.txt" ] || { cat "$work/warnings.txt"; fail "$p.1 renders with warnings"; }
  grep -q "^NAME" "$work/page.txt" || fail "$p.1 has no NAME section"
  grep -qE "^ +$p +- " "$work/page.txt" || fail "$p.1's NAME does not name $p"
  grep -q -- "--version" "$work/page.txt" || fail "$p.1 does not list --version"
  grep -q "^SEE ALSO" "$work/page.txt" || fail "$p.1 has no SEE ALSO section"
done
render "$prefix/share/man/man1/vufront.1" >"$work/page.txt" 2>/dev/null
for sub in probe check demo snapshot restore job attach; do
  grep -q "vufront $sub" "$work/page.txt" || fail "vufront.1 does not describe '$sub'"
done
grep -q -- "--reconnect-max-delay" "$work/page.txt" || fail "vufront.1 lacks attach's options"
echo "man pages: ok"

# complete WORD... : what the completion of PROGRAM offers for the last WORD.
completions=$prefix/share/bash-completion/completions
complete_words() {
  local program=$1
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
           func=$(complete -p "$1" | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
           "$func"; printf "%s\n" "${COMPREPLY[@]}"' _ "$completions/$program" "$@"
}
expect() {  # expect WANTED WORD...: the completion of WORD... offers WANTED
  local wanted=$1; shift
  local got
  got=$(complete_words "$@") || fail "completing '$*' failed"
  grep -qx -- "$wanted" <<<"$got" || fail "completing '$*' offers '${got//$'\n'/ }', not $wanted"
}
for p in "${programs[@]}"; do
  [ -f "$completions/$p" ] || fail "no completion file $completions/$p"
  line=$(bash -c 'source "$1"; complete -p "$2"' _ "$completions/$p" "$p") ||
    fail "the completion of $p does not load"
  [[ $line == "complete -F "*" $p" ]] || fail "the completion of $p registers '$line'"
done
expect probe vufront pr
expect attach vufront help at
expect --wait-for-backend vufront check /tmp/s.sock --wait
expect fs vufront check /tmp/s.sock --device f
expect --reconnect-give-up vufront attach --reconnect-g
expect --socket vufront-backend --so
expect net vufront-backend --device n
expect --control vufront-example-vmm --con
touch "$work/snap.vfsnap"
expect "$work/snap.vfsnap" vufront restore s.sock --in "$work/snap"
mkdir "$work/snapdir"
got=$(complete_words vufront attach --snapshot-dir "$work/snap")
[ "$got" = "$work/snapdir" ] || fail "--snapshot-dir DIR offers '$got', not only the directory"
group=$(id -gn)
expect "$group" vufront attach --control-group "${group:0:1}"
[ -z "$(complete_words vufront check s.sock --queues '')" ] || fail "--queues N offers words"
echo "bash completion: ok"

pc=$(find "$prefix" -name vufront.pc)
[ -n "$pc" ] || fail "no vufront.pc under $prefix"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
pkg-config --exists vufront || fail "pkg-config does not find vufront"
[ "$(pkg-config --variable=prefix vufront)" = "$prefix" ] || fail "vufront.pc names another prefix"
pc_flags=$(pkg-config --cflags --libs vufront)
echo "pkg-config --cflags --libs vufront: $pc_flags"
# shellcheck disable=SC2086
g++ -std=c++17 $flags -o "$work/consumer" "$src/tests/package/main.cpp" $pc_flags ||
  fail "main.cpp does not build with pkg-config's flags"
set +e
out=$("$work/consumer" "$work/nobody.ctl")
status=$?
set -e
[ "$status" -eq 3 ] || fail "the pkg-config consumer exited $status, not 3: $out"
grep -q 'timeout: nobody listens' <<<"$out" || fail "the pkg-config consumer said '$out'"
echo "pkg-config consumer: ok"

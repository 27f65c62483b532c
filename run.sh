#!/usr/bin/env bash
# vufront's one-stop script: installs what is missing (Debian 12 packages),
# configures and builds (Release, into build/), then runs.
#
#   ./run.sh          the main job: `vufront demo` (the reference back-end on a
#                     private socket, the whole device lifecycle through the
#                     actors), then `vufront check` against a qemu-storage-daemon
#                     vhost-user-blk back-end started (and stopped) here
#   ./run.sh test     build and run every test (unit, integration, corpus replay)
#   ./run.sh guest-demo  unmodified QEMU -> vufront -> qemu-storage-daemon: a
#                     real Linux guest writes and reads back through vufront's
#                     VMM socket; prints the command lines, the guest console,
#                     vufront's log and status (tests/integration/vmm_demo.py)
#   ./run.sh build    only install and build
#   ./run.sh --help   this text
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores),
#              CMAKE_ARGS (extra arguments for the configure step).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

# Debian packages the build, the tests and the main job need.
PACKAGES=(
  cmake make g++ pkg-config
  libcaf-dev libboost-dev libboost-context-dev nlohmann-json3-dev libcli11-dev doctest-dev libxxhash-dev
  libspdlog-dev libsystemd-dev  # the log (base/log), sd_notify (vufront attach)
  python3 qemu-system-common
  dpdk-dev
  help2man  # the man pages, written at build time (dist/)
)
# Only for the tests: a real guest on the reference back-end (QEMU, the cloud
# kernel and its modules, a static busybox for the initramfs built at test time);
# groff to render the installed man pages (package_install).
TEST_PACKAGES=(
  qemu-system-x86 linux-image-cloud-amd64 busybox-static
  groff-base
  strace  # bench/bench_vmm_control.py: QEMU's waits for vhost-user replies
)

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

install_missing() {  # install_missing [PACKAGE...]: PACKAGES and these
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "run.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

build() {
  install_missing
  # shellcheck disable=SC2086
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

run_tests() {
  install_missing "${TEST_PACKAGES[@]}"
  build
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"
}

# The main job: a real back-end, started here and stopped by pid whatever happens.
run_main() {
  build
  echo "== $BUILD_DIR/bin/vufront demo"
  "$BUILD_DIR/bin/vufront" demo
  # globals, not locals: the EXIT trap runs after this function has returned
  RUN_DIR=$(mktemp -d /tmp/vufront-run-XXXXXX)
  RUN_PID=""
  RUN_START=""
  # qsd's start time (field 22 of /proc/PID/stat): once it exits its pid may
  # go to another process, which must not get our signals
  ours() { [ -n "$RUN_PID" ] && [ "$(cut -d' ' -f22 "/proc/$RUN_PID/stat" 2>/dev/null)" = "$RUN_START" ]; }
  cleanup() {
    if ours; then
      kill -INT "$RUN_PID" 2>/dev/null || true
      for _ in $(seq 30); do ours || break; sleep 0.1; done
      ours && kill -KILL "$RUN_PID" 2>/dev/null || true
    fi
    rm -rf "$RUN_DIR"
  }
  trap cleanup EXIT
  local dir=$RUN_DIR pid
  local sock="$dir/blk.sock" img="$dir/disk.img"
  truncate -s 64M "$img"
  setsid qemu-storage-daemon \
    --blockdev "driver=file,node-name=disk0,filename=$img" \
    --export "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$sock,writable=on,num-queues=2" \
    --pidfile "$dir/qsd.pid" >"$dir/qsd.log" 2>&1 </dev/null &
  pid=$!
  RUN_START=$(cut -d' ' -f22 "/proc/$pid/stat" 2>/dev/null || true)
  RUN_PID=$pid
  for _ in $(seq 100); do
    [ -S "$sock" ] && [ -s "$dir/qsd.pid" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/qsd.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "== qemu-storage-daemon (pid $pid) serving vhost-user-blk on $sock"
  echo "== $BUILD_DIR/bin/vufront check $sock --queues 2"
  "$BUILD_DIR/bin/vufront" check "$sock" --queues 2
}

# The guest demo: QEMU 7.2 (TCG) -> vufront attach --vmm-socket -> qemu-storage-daemon;
# the script starts and stops (by pid) all three.
run_guest_demo() {
  install_missing "${TEST_PACKAGES[@]}"
  build
  python3 tests/integration/vmm_demo.py --vufront "$BUILD_DIR/bin/vufront"
}

case "${1:-main}" in
  main) run_main ;;
  test) run_tests ;;
  guest-demo) run_guest_demo ;;
  build) build ;;
  -h|--help|help) usage ;;
  *) echo "run.sh: unknown command '$1'" >&2; usage >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The CPU addon built with AddressSanitizer and UndefinedBehaviorSanitizer (gcc or clang) into
# build-asan/, then the unit, parity, property and raw-binding suites run against it (KOALA_OPTIM_ADDON).
# Any sanitizer report fails the run: UBSan halts on its first finding, ASan on any error.
#
#   scripts/sanitize.sh            build (incremental) and run the suites
#   scripts/sanitize.sh build      build only
#
# Node itself is not instrumented, so the sanitizer runtimes are preloaded (LD_PRELOAD) ahead of
# it. detect_leaks=0: V8 keeps memory alive to its exit by design, and LeakSanitizer would report
# all of it; leaks of the addon are the soak test's business (test/soak). handle_segv=0: V8 handles
# SIGSEGV itself (guard pages), ASan must leave that signal to it.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX="${CXX:-g++}"
# CMAKE_CXX_FLAGS_RELEASE, not CMAKE_CXX_FLAGS: cmake-js sets the latter itself.
SANITIZE="-DNDEBUG -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# An empty CMAKE_CUDA_COMPILER skips the CUDA addon (check_language(CUDA) takes it as decided).
npx cmake-js compile --out build-asan --target koala_optim \
  --CDCMAKE_CXX_COMPILER="$CXX" \
  --CDCMAKE_CXX_FLAGS_RELEASE="$SANITIZE" \
  --CDCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  --CDCMAKE_CUDA_COMPILER=
ADDON="$PWD/build-asan/Release/koala_optim.node"
# A build that silently lost the flags would pass everything: check the instrumentation is there.
nm -D "$ADDON" | grep __asan_report > /dev/null || { echo "sanitize.sh: $ADDON is not instrumented" >&2; exit 1; }
[ "${1:-}" = build ] && exit 0

runtime() { "$CXX" -print-file-name="$1"; }
export LD_PRELOAD="$(runtime libasan.so) $(runtime libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export KOALA_OPTIM_ADDON="$ADDON"
# One worker: a sanitizer report then stops the run, not just one of several jest workers.
# test/native/resources.test.ts is left to the plain runs: it caps the child's address space
# (prlimit) to provoke out-of-memory, and ASan's shadow memory alone reserves more than any cap.
npx jest --runInBand test/unit test/parity test/property test/native --testPathIgnorePatterns 'test/native/resources'

#!/usr/bin/env bash
# The GPU check, in one go and meant to run once, on a machine with an NVIDIA GPU, nvcc, cmake and
# python3 with torch but no Node (bench/README.md): the CUDA tests with KOALA_REQUIRE_CUDA=1 (a
# test that cannot run fails, naming why), then the KOALA timings beside a device-to-device copy,
# the official code's per-layer torch approach and torch's fused AdamW. Needs .gpu-carry/ from
# bench/gpu/prepare.sh. Unpacks with python3's lzma (xz may be absent there). Each stage has a time
# limit so that one run stays within about four minutes. Writes to $OUT (default ./gpu-out):
# run.log, tests.log, koala-gpu.json, torch-gpu.json, gpu-results.json, gpu-results.md. Exits with
# the tests' status (1 when there is no usable GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
CARRY=$PWD/.gpu-carry
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
W=$(mktemp -d "$PWD/.gpu-work.XXXX")  # not /tmp, which may be mounted noexec
trap 'rm -rf "$W"' EXIT
export PATH="$PATH:/usr/local/cuda/bin"
export KOALA_REQUIRE_CUDA=1
log() { echo "[gpu-check $(date +%T)] $*" | tee -a "$OUT/run.log"; }
# .xz and .tar.xz with python3's lzma module.
unxz_to() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; }
untar_xz() {
  python3 -c '
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    try:
        t.extractall(sys.argv[2], filter="tar")
    except TypeError:  # a Python without extraction filters
        t.extractall(sys.argv[2])' "$1" "$2"
}

log "unpacking node, jest and the golden runs (python3 lzma)"
unxz_to "$CARRY/node.xz" "$W/node" && chmod +x "$W/node" || { log "could not unpack node"; exit 1; }
export PATH="$W:$PATH"
untar_xz "$CARRY/jest.tar.xz" "$W" && untar_xz "$CARRY/golden.tar.xz" "$W" || { log "could not unpack jest or the golden runs"; exit 1; }
node --version >> "$OUT/run.log" 2>&1 || { log "the carried node does not run on this machine"; exit 1; }
nvidia-smi -L >> "$OUT/run.log" 2>&1 || log "nvidia-smi: no GPU listed"
export KOALA_OPTIM_ADDON=$CARRY/koala_optim.node KOALA_OPTIM_CUDA_ADDON=$CARRY/koala_optim_cuda.node
export KOALA_OPTIM_DEV_ADDON=$CARRY/koala_optim_dev.node KOALA_GOLDEN_DIR=$W/golden KOALA_GOLDEN_PP_DIR=$W/golden-koala-pp

# Loading and probing are told apart: an addon that does not load here is rebuilt with this
# machine's compilers; an addon that loads but sees no device is not (the tests then say why).
load='require(process.env.KOALA_OPTIM_ADDON); require(process.env.KOALA_OPTIM_DEV_ADDON); const s = require(process.env.KOALA_OPTIM_CUDA_ADDON).probe(); console.log(s.devices > 0 ? "CUDA devices: " + s.devices : "no usable GPU: " + s.error)'
if ! node -e "$load" >> "$OUT/run.log" 2>&1; then
  log "the addons built elsewhere do not load here: rebuilding them with this machine's compilers"
  untar_xz "$CARRY/headers.tar.xz" "$W"
  [ -e node_modules ] || ln -s "$W/node_modules" node_modules  # where CMakeLists.txt looks for node-addon-api
  timeout 150 cmake -S . -B "$W/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_JS_INC="$W/node_modules/node-api-headers/include" \
    -DKOALA_EMULATED_AVX512=ON >> "$OUT/run.log" 2>&1 &&
    timeout 150 cmake --build "$W/build" >> "$OUT/run.log" 2>&1 || { log "the rebuild failed (run.log)"; exit 1; }
  cp "$W/build/koala_optim_avx512_emulated.node" "$CARRY/js/build-cmake/Release/"
  export KOALA_OPTIM_ADDON=$W/build/koala_optim.node KOALA_OPTIM_CUDA_ADDON=$W/build/koala_optim_cuda.node KOALA_OPTIM_DEV_ADDON=$W/build/koala_optim_dev.node
  node -e "$load" >> "$OUT/run.log" 2>&1 || { log "the rebuilt addons do not load either (run.log)"; exit 1; }
fi
tail -n 1 "$OUT/run.log"
gpu=$(node -e 'process.stdout.write(String(require(process.env.KOALA_OPTIM_CUDA_ADDON).probe().devices))')

# The host's processor: where it has AVX-512 (the development machines have not), the ISA test
# below runs the CPU addon's AVX-512 passes natively against the AVX2 and baseline ones.
log "CPU: $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), AVX-512F: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
log "CUDA tests (KOALA_REQUIRE_CUDA=1) and the CPU passes' ISA test, at most 120 s"
# A config of its own: the repository's jest.config.js (ts-jest) is for the sources, not this JS.
config="{\"rootDir\":\"$CARRY/js\",\"testEnvironment\":\"node\",\"testTimeout\":60000,\"transform\":{},\"testMatch\":[\"**/test/cuda/*.test.js\",\"**/test/parity/isa.test.js\"]}"
timeout 120 node "$W/node_modules/jest/bin/jest.js" --ci --config "$config" > "$OUT/tests.log" 2>&1
tests=$?
if grep -q '^Tests:' "$OUT/tests.log"; then
  tail -n 5 "$OUT/tests.log" | tee -a "$OUT/run.log"
  grep -m 1 'KOALA_REQUIRE_CUDA=1, but' "$OUT/tests.log" | tee -a "$OUT/run.log"
  grep -m 1 'bitwise equal:' "$OUT/tests.log" | tee -a "$OUT/run.log"
elif [ "$tests" = 124 ]; then
  log "the tests ran past 120 s (tests.log)"
else
  log "jest ran no test (a setup error, not a kernel failure): see tests.log"
fi
if [ "$gpu" = 0 ]; then
  log "no usable GPU: the timings are skipped"
  exit 1
fi
log "KOALA timings (at most 60 s)"
timeout 60 node "$CARRY/js/bench/gpu/bench.js" "$OUT/koala-gpu.json" 2>&1 | tee -a "$OUT/run.log"
log "torch timings (at most 45 s)"
timeout 45 python3 bench/gpu/torch_bench.py "$OUT/koala-gpu.json" "$OUT/torch-gpu.json" 2>&1 | tee -a "$OUT/run.log"
python3 bench/gpu/report.py "$OUT/koala-gpu.json" "$OUT/torch-gpu.json" "$OUT/gpu-results.json" "$OUT/gpu-results.md" >> "$OUT/run.log" 2>&1
log "done (tests exit status $tests)"
exit $tests

#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU, nvcc, cmake and python3 with torch but
# no Node (bench/README.md): the CUDA tests, then the KOALA timings beside a device-to-device copy,
# the official code's per-layer torch approach and torch's fused AdamW. Needs .gpu-carry/ from
# bench/gpu/prepare.sh. Writes to $OUT (default ./gpu-out): run.log, tests.log, koala-gpu.json,
# torch-gpu.json, gpu-results.json, gpu-results.md. Exits with the tests' status.
set -uo pipefail
cd "$(dirname "$0")/../.."
CARRY=$PWD/.gpu-carry
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
W=$(mktemp -d "$PWD/.gpu-work.XXXX")  # not /tmp, which may be mounted noexec
export PATH="$PATH:/usr/local/cuda/bin"
log() { echo "[gpu-check $(date +%T)] $*" | tee -a "$OUT/run.log"; }

log "unpacking node, jest and the golden runs"
xz -dc "$CARRY/node.xz" > "$W/node" && chmod +x "$W/node"
export PATH="$W:$PATH"
tar -C "$W" -xJf "$CARRY/jest.tar.xz"
tar -C "$W" -xJf "$CARRY/golden.tar.xz"
node --version >> "$OUT/run.log" 2>&1 || { log "the carried node does not run on this machine"; exit 1; }
nvidia-smi -L >> "$OUT/run.log" 2>&1
export KOALA_OPTIM_ADDON=$CARRY/koala_optim.node KOALA_OPTIM_CUDA_ADDON=$CARRY/koala_optim_cuda.node KOALA_GOLDEN_DIR=$W/golden

probe='const s = require(process.env.KOALA_OPTIM_CUDA_ADDON).probe(); require(process.env.KOALA_OPTIM_ADDON); if (!s.devices) throw new Error(s.error); console.log("CUDA devices:", s.devices)'
if ! node -e "$probe" >> "$OUT/run.log" 2>&1; then
  log "the addons built elsewhere do not run here: rebuilding them with this machine's compilers"
  tar -C "$W" -xJf "$CARRY/headers.tar.xz"
  [ -e node_modules ] || ln -s "$W/node_modules" node_modules  # where CMakeLists.txt looks for node-addon-api
  cmake -S . -B "$W/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_JS_INC="$W/node_modules/node-api-headers/include" >> "$OUT/run.log" 2>&1 &&
    cmake --build "$W/build" >> "$OUT/run.log" 2>&1 || { log "the rebuild failed (run.log)"; exit 1; }
  export KOALA_OPTIM_ADDON=$W/build/koala_optim.node KOALA_OPTIM_CUDA_ADDON=$W/build/koala_optim_cuda.node
  node -e "$probe" >> "$OUT/run.log" 2>&1 || { log "the rebuilt addons do not run either (run.log)"; exit 1; }
fi

log "CUDA tests"
# A config of its own: the repository's jest.config.js (ts-jest) is for the sources, not this JS.
config="{\"rootDir\":\"$CARRY/js\",\"testEnvironment\":\"node\",\"testTimeout\":120000,\"transform\":{},\"testMatch\":[\"**/test/cuda/*.test.js\"]}"
node "$W/node_modules/jest/bin/jest.js" --ci --config "$config" > "$OUT/tests.log" 2>&1
tests=$?
if grep -q '^Tests:' "$OUT/tests.log"; then
  tail -n 5 "$OUT/tests.log" | tee -a "$OUT/run.log"
else
  log "jest ran no test (a setup error, not a kernel failure): see tests.log"
fi

log "KOALA timings"
node "$CARRY/js/bench/gpu/bench.js" "$OUT/koala-gpu.json" 2>&1 | tee -a "$OUT/run.log"
log "torch timings"
python3 bench/gpu/torch_bench.py "$OUT/koala-gpu.json" "$OUT/torch-gpu.json" 2>&1 | tee -a "$OUT/run.log"
python3 bench/gpu/report.py "$OUT/koala-gpu.json" "$OUT/torch-gpu.json" "$OUT/gpu-results.json" "$OUT/gpu-results.md" >> "$OUT/run.log" 2>&1
rm -rf "$W"
log "done (tests exit status $tests)"
exit $tests

#!/usr/bin/env bash
# Prepares the GPU check where Node is (this project's machines): builds the addons (the CUDA one
# for sm_80 and sm_90; the development addon, which the CUDA tests' device-free parts use; the
# emulated AVX-512 test addon), compiles the library, the CUDA tests, the CPU passes' ISA test and
# the GPU benchmark to JS, and packs them with a Node binary, jest,
# the golden runs and the headers for a rebuild into .gpu-carry/ (git-ignored). bench/gpu/run.sh
# then runs on the GPU machine with .gpu-carry carried along (and unpacks with python3, not xz).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu-carry

rm -rf "$CARRY"
npm run build:avx512-emulated  # the addons, and the ISA test's emulated one (Note [emulated AVX-512])
test -f build-cmake/Release/koala_optim_cuda.node || { echo "no CUDA addon was built: is nvcc on the PATH?" >&2; exit 1; }
npx tsc -p bench/gpu/tsconfig.json
cp build-cmake/Release/koala_optim.node build-cmake/Release/koala_optim_cuda.node build-cmake/Release/koala_optim_dev.node "$CARRY/"
# Where the compiled test/parity/isa.test.js looks for it.
mkdir -p "$CARRY/js/build-cmake/Release"
cp build-cmake/Release/koala_optim_avx512_emulated.node "$CARRY/js/build-cmake/Release/"
tar -C test/fixtures -cJf "$CARRY/golden.tar.xz" golden golden-koala-pp  # KOALA-M/V and KOALA++ runs
xz -9 -T0 -c "$(readlink -f "$(command -v node)")" > "$CARRY/node.xz"
tar -cJf "$CARRY/headers.tar.xz" node_modules/node-addon-api node_modules/node-api-headers

# jest at the version the project tests with, installed apart so that only its own tree travels.
jest_version=$(node -p "require('./node_modules/jest/package.json').version")
tmp=$(mktemp -d)
(cd "$tmp" && npm init -y > /dev/null && npm install --no-audit --no-fund "jest@$jest_version" > /dev/null)
tar -C "$tmp" -cJf "$CARRY/jest.tar.xz" node_modules
rm -rf "$tmp"
du -sh "$CARRY"

#!/usr/bin/env bash
# The install checks of the packed tarball (.ci/run calls this with its path), each in a fresh
# project in a temporary folder:
#  1. npm install --ignore-scripts TGZ: the prebuilt addons load (native backend, CUDA addon there),
#     koala-optim/tfjs without its peer throws ERR_KOALA_PEER_MISSING, the bench bin runs;
#  2. npm install TGZ with cmake absent from the PATH: succeeds, native backend (the prebuild);
#  3. the tarball without its prebuilds, installed with no compiler, cmake or make on the PATH:
#     succeeds, runs on the js backend, and both the install and the run-time warning name the fix;
#  4. the same tarball installed with the tools and KOALA_OPTIM_SKIP_CUDA=1: the install script
#     builds the CPU addon from source (native backend from build-cmake/) and no CUDA addon.
set -euo pipefail
TGZ=$(readlink -f "$1")
W=$(mktemp -d "${TMPDIR:-/tmp}/koala-install.XXXXXX")
trap 'rm -rf "$W"' EXIT
export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

# A folder of links to every command on $PATH except those matching the given patterns.
path_without() {
  local dir name d f
  dir=$(mktemp -d "$W/path.XXXXXX")
  IFS=: read -ra dirs <<< "$PATH"
  for d in "${dirs[@]}"; do
    for f in "$d"/*; do
      name=$(basename "$f")
      [ -x "$f" ] && [ ! -d "$f" ] && [ ! -e "$dir/$name" ] || continue
      for pattern in "$@"; do
        # shellcheck disable=SC2254
        case "$name" in $pattern) continue 2 ;; esac
      done
      ln -s "$f" "$dir/$name"
    done
  done
  echo "$dir"
}

project() {
  mkdir -p "$W/$1" && cd "$W/$1" && npm init -y > /dev/null
}

# Node code run in the project: ok(cond, what) fails the check with a message.
run_node() {
  node -e "const ok = (c, what) => { if (!c) { console.error('install check failed: ' + what); process.exit(1); } }; $1"
}

STEP="const k = require('koala-optim');
const p = new Float32Array(1000).fill(0.1), g = new Float32Array(1000).fill(0.01);
const opt = new k.KoalaM([{ param: p, grad: g }]);
opt.predict(); ok(opt.update(0.5, 0.3).applied, 'a step is applied');"

echo "== 1. npm install --ignore-scripts (the prebuilds, no install script)"
project ignore-scripts
npm install --ignore-scripts "$TGZ" > install.log 2>&1 || { cat install.log; exit 1; }
run_node "$STEP
ok(opt.backend === 'native', 'native backend, got ' + opt.backend);
ok(k.nativeStatus().path.includes('/prebuilds/linux-x64/koala_optim.node'), 'the CPU prebuild loads: ' + JSON.stringify(k.nativeStatus()));
ok(/prebuilds\/linux-x64\/koala_optim_cuda.node$/.test(k.cuda.available().path || ''), 'the CUDA prebuild loads: ' + JSON.stringify(k.cuda.available()));
try { require('koala-optim/tfjs'); ok(false, 'koala-optim/tfjs without tfjs-core throws'); }
catch (e) { ok(e.code === 'ERR_KOALA_PEER_MISSING' && /npm install @tensorflow\/tfjs-core/.test(e.message), 'a coded error naming tfjs-core, got ' + e.message); }
console.log('native backend from', k.nativeStatus().path, '; CUDA addon', k.cuda.available().path);"
npx --no-install koala-optim-bench --sizes 1e5,1000+24 --threads 1 --out bench-out > bench.log 2>&1 || { cat bench.log; exit 1; }
grep -q '^| 100k | 100,000 | 4 |' bench.log || { cat bench.log; echo "install check failed: the bench bin's summary" >&2; exit 1; }
test -f bench-out/bench.md
echo "koala-optim-bench ran (summary in bench.log)"

echo "== 2. npm install without cmake on the PATH"
project no-cmake
NO_CMAKE=$(path_without 'cmake*')
PATH=$NO_CMAKE npm install --foreground-scripts "$TGZ" > install.log 2>&1 || { cat install.log; exit 1; }
grep -q 'koala-optim: the prebuilt addon loads' install.log || { cat install.log; echo "install check failed: the install script's load check" >&2; exit 1; }
grep '^koala-optim:' install.log
PATH=$NO_CMAKE run_node "$STEP
ok(opt.backend === 'native', 'native backend, got ' + opt.backend);
console.log('native backend from', k.nativeStatus().path);"

echo "== 3. the tarball without prebuilds, installed with no compiler, cmake or make"
mkdir -p "$W/unpacked" && tar -xzf "$TGZ" -C "$W/unpacked"
rm -rf "$W/unpacked/package/prebuilds"
tar -czf "$W/no-prebuilds.tgz" -C "$W/unpacked" package
project no-toolchain
NO_TOOLS=$(path_without 'cmake*' 'c++*' 'g++*' 'gcc*' 'cc' 'clang*' '*-g++*' '*-gcc*' 'make' 'gmake' 'ninja' 'nvcc')
PATH=$NO_TOOLS npm install --foreground-scripts "$W/no-prebuilds.tgz" > install.log 2>&1 || { cat install.log; exit 1; }
grep -q 'npm rebuild koala-optim' install.log || { cat install.log; echo "install check failed: the install names the fix" >&2; exit 1; }
grep '^koala-optim:' install.log
PATH=$NO_TOOLS run_node "let warning = '';
process.on('warning', (w) => { warning = w.message; });
$STEP
ok(opt.backend === 'js', 'js backend, got ' + opt.backend);
setImmediate(() => {
  ok(/native addon unavailable/.test(warning) && /npm rebuild koala-optim/.test(warning), 'the fallback warning names the fix, got: ' + warning);
  console.log('js backend; warning:', warning);
});"
echo "== 4. the tarball without prebuilds, built from source at install, CUDA skipped"
project from-source
KOALA_OPTIM_SKIP_CUDA=1 npm install --foreground-scripts "$W/no-prebuilds.tgz" > install.log 2>&1 || { cat install.log; exit 1; }
grep '^koala-optim:' install.log
grep -q 'the CUDA backend is skipped, as asked' install.log || { cat install.log; echo "install check failed: KOALA_OPTIM_SKIP_CUDA" >&2; exit 1; }
run_node "$STEP
ok(opt.backend === 'native', 'native backend, got ' + opt.backend);
ok(k.nativeStatus().path.endsWith('/build-cmake/Release/koala_optim.node'), 'the addon built at install: ' + k.nativeStatus().path);
ok(k.cuda.available().path === null, 'no CUDA addon was built');
console.log('native backend from', k.nativeStatus().path);"
echo "install checks passed"

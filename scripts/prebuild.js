#!/usr/bin/env node
// `npm run prebuilds`: builds the addons with cmake-js and copies them into
// prebuilds/<platform>-<arch>/, the folder the npm tarball ships and lib/native.ts searches first
// (Note [addon search]). Each file is stripped, must load here, and on Linux must not need a newer
// glibc than the floor the README states (GLIBC_FLOOR below; Note [portable addons] in CMakeLists.txt).
// The CUDA addon is required unless KOALA_OPTIM_SKIP_CUDA is set: the tarball is meant to carry it.
'use strict';
const { execFileSync, spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, rmSync } = require('node:fs');
const { join, relative } = require('node:path');

const GLIBC_FLOOR = '2.34';

/** KOALA_OPTIM_SKIP_CUDA (or npm's koala_optim_skip_cuda) set to a true value, as CMakeLists.txt reads it. */
function skipCuda() {
  return [process.env.KOALA_OPTIM_SKIP_CUDA, process.env.npm_config_koala_optim_skip_cuda].some((v) => v && !/^(0|false|off|no|n)$/i.test(v));
}
// The library's addons, and the benchmark's own (koala_optim_dev, which the library never loads).
const ADDONS = [
  { name: 'koala_optim', required: true },
  { name: 'koala_optim_cuda', required: !skipCuda() },
  { name: 'koala_optim_dev', required: true },
];

const root = join(__dirname, '..');
const built = join(root, 'build-cmake', 'Release');
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);

function die(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

/** The newest GLIBC_x.y symbol version a file needs, from objdump -T. */
function glibcNeeded(file) {
  const text = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const versions = [...text.matchAll(/\bGLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return versions.length > 0 ? versions[versions.length - 1].join('.') : null;
}

const newer = (a, b) => {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number));
  return x[0] - y[0] || x[1] - y[1];
};

const build = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--out', 'build-cmake'], { cwd: root, stdio: 'inherit' });
if (build.status !== 0) die('the cmake-js build failed');

rmSync(join(root, 'prebuilds'), { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const { name, required } of ADDONS) {
  const from = join(built, `${name}.node`);
  if (!existsSync(from)) {
    if (required) die(`${relative(root, from)} was not built${name === 'koala_optim_cuda' ? ' (is nvcc on the PATH? KOALA_OPTIM_SKIP_CUDA=1 packs without it)' : ''}`);
    continue;
  }
  const to = join(out, `${name}.node`);
  copyFileSync(from, to);
  if (process.platform === 'linux') {
    execFileSync('strip', ['--strip-unneeded', to]);
    const needed = glibcNeeded(to);
    if (needed && newer(needed, GLIBC_FLOOR) > 0) die(`${name}.node needs GLIBC_${needed}, newer than the stated floor ${GLIBC_FLOOR}`);
    if (/\bGLIBCXX_|libstdc\+\+\.so/.test(execFileSync('objdump', ['-p', '-T', to], { encoding: 'utf8', maxBuffer: 64 << 20 }))) {
      die(`${name}.node needs the system's libstdc++: link it with KOALA_LINK_FLAGS (Note [portable addons], CMakeLists.txt)`);
    }
    console.log(`prebuild: ${relative(root, to)} (needs GLIBC_${needed ?? 'none'}, floor ${GLIBC_FLOOR})`);
  } else {
    console.log(`prebuild: ${relative(root, to)}`);
  }
  require(to); // it must load here
}

#!/usr/bin/env node
// npm's install step for koala-optim (Note [install]).
//
// Note [install]: a prebuild that loads needs nothing more, so the step only checks it. Where none
// loads (another platform, an older glibc, a source checkout), it builds the addons from source
// with cmake-js. A failed build never fails the install: the package then runs on its js backend,
// and this step and the run-time warning both say how to get the native one. With
// `npm install --ignore-scripts` this step does not run at all; the prebuild loads anyway. In a
// source checkout (no dist/ yet) it always builds, and a failed build fails `npm ci` there: a
// developer needs the addon.
'use strict';
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const log = (message) => console.log(`koala-optim: ${message}`);

/** The compiled loader (dist/ is in the tarball; a source checkout compiles it after this step). */
function loader() {
  const file = join(root, 'dist', 'lib', 'native.js');
  return existsSync(file) ? require(file) : null;
}

const native = loader();
if (native) {
  const status = native.nativeStatus();
  if (status.available && status.path.startsWith(native.PREBUILD_DIR)) {
    log(`the prebuilt addon loads (${status.path}); nothing to build`);
    process.exit(0);
  }
  log(`no prebuilt addon loads here (${status.reason}); building from source`);
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--out', 'build-cmake'];
// A source checkout on x86-64 also gets the test-only addon whose AVX-512 passes run emulated on
// AVX2, for the ISA test (Note [emulated AVX-512], native/cpu/passes.h).
if (!native && process.arch === 'x64') args.push('--CDKOALA_EMULATED_AVX512=ON');
const build = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (build.status !== 0 && !native) {
  // A source checkout: its developer needs the addon, and the tests would fail without it.
  console.error('koala-optim: the native build failed; a checkout needs a C++17 compiler, cmake and make');
  process.exit(1);
}
if (build.status !== 0) {
  console.warn(
    `koala-optim: the native addon could not be built (${build.error ? build.error.message : `cmake-js exited with ${build.status}`}).\n` +
      `koala-optim: the package works on its js backend (about 10 to 20 times slower); ${native.REBUILD_HINT}.`,
  );
}
process.exit(0);

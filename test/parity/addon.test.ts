// Which addon the parity tests ran against: KOALA_OPTIM_ADDON picks one (CI runs them against the
// cmake-js and the node-gyp build); by default the cmake-js build.
import { join, resolve } from 'node:path';

import { nativeStatus } from '../../lib';

test('the native addon loads, from the build asked for', () => {
  const status = nativeStatus();
  expect(status).toMatchObject({ available: true, reason: '' });
  const want = process.env.KOALA_OPTIM_ADDON ?? join('build-cmake', 'Release', 'koala_optim.node');
  expect(status.path).toBe(resolve(join(__dirname, '..', '..'), want));
  console.log(`native addon under test: ${status.path}`);
});

test('the production addon exports the optimizer and its constants only', () => {
  // The benchmark kernels and test hooks live in the development addon (native/dev/).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(nativeStatus().path!) as Record<string, unknown>;
  expect(Object.keys(mod).sort()).toEqual(['NativeOptimizer', 'chunkElems', 'isa', 'protocol']);
});

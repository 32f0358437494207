// Native memory is reported to V8 (Note [native memory reported], native/binding/cpu_addon.cc): an
// optimizer's bytes count as external memory from construction until dispose() or its collection,
// so that optimizers dropped without dispose() are collected under memory pressure instead of
// piling up behind a small JS heap. Runs in a child process (node --expose-gc), away from jest's
// own heap; RSS is the process's, external memory V8's count as the development addon reads it
// (process.memoryUsage().external leaves out what addons report).
import { spawnSync } from 'node:child_process';

import { devAddonStatus } from '../../bench/dev-addon';
import { nativeStatus } from '../../lib';

const devPath = devAddonStatus().path;
const skip = !nativeStatus().available ? `the native addon does not load: ${nativeStatus().reason}` : '';
const skipExternal = skip || (devPath ? '' : `no development addon to read V8 external memory with: ${devAddonStatus().reason}`);
if (skipExternal) console.warn(`native memory tests skipped: ${skipExternal}`);
const maybe = skip ? test.skip : test;
const maybeExternal = skipExternal ? test.skip : test;

// KOALA-M over 200,000 float32 parameters holds 1.6 MB of velocities and averages. Every optimizer
// steps on the same (shared) arrays, so the JS side allocates next to nothing per optimizer.
const PRELUDE = `
const addon = require(process.argv[1]);
const dev = process.argv[2] ? require(process.argv[2]) : null;
const N = 200000;
const config = { variant: 0, dtype: 0, threads: 1, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9,
  adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };
const params = [new Float32Array(N).fill(0.5)], grads = [new Float32Array(N).fill(0.01)];
const mask = new Uint8Array(1);
const make = () => new addon.NativeOptimizer(config, params, grads, mask);
const external = () => dev.externalMemory();
const tick = () => new Promise((resolve) => setImmediate(resolve));
async function settle() {
  // Node-API finalizers run from the event loop after the collection: collect, let them run, thrice.
  for (let k = 0; k < 3; k++) { gc(); await tick(); }
}
`;

function child(body: string): Record<string, number> {
  const script = `${PRELUDE}\n(async () => {\n${body}\n})();`;
  const out = spawnSync(process.execPath, ['--expose-gc', '-e', script, nativeStatus().path!, devPath ?? ''], { encoding: 'utf8', timeout: 100_000 });
  if (out.status !== 0) console.log(`child: status ${out.status}, signal ${out.signal}\n${out.stderr.slice(-2000)}`);
  expect(out.status).toBe(0);
  return JSON.parse(out.stdout) as Record<string, number>;
}

maybeExternal("an optimizer's native bytes count as V8 external memory until dispose() or collection", () => {
  const r = child(`
    await settle();
    const e0 = external();
    const disposed = make();
    const held = external() - e0;
    disposed.dispose();
    const afterDispose = external() - e0;
    disposed.dispose();
    const afterSecondDispose = external() - e0;
    let dropped = make();
    const heldDropped = external() - e0;
    dropped = null;
    await settle();
    const afterCollection = external() - e0;
    console.log(JSON.stringify({ held, afterDispose, afterSecondDispose, heldDropped, afterCollection }));
  `);
  console.log(`external memory: ${JSON.stringify(r)}`);
  const state = 2 * 200_000 * 4; // velocities and averages
  expect(r.held).toBeGreaterThanOrEqual(state);
  expect(r.held).toBeLessThan(state + 64 * 1024); // plus the plan's per-chunk sums
  expect(r.heldDropped).toBe(r.held);
  // Back to where it was, give or take what V8 itself allocates on the way (a byte, here).
  for (const after of [r.afterDispose, r.afterSecondDispose, r.afterCollection]) expect(Math.abs(after)).toBeLessThan(1024);
});

maybe('2,000 optimizers dropped without dispose() or gc() do not keep their memory', () => {
  // 2,000 x 1.6 MB = 3.2 GB if nothing is collected. The loop yields to the event loop every 20
  // optimizers, as a training loop does, and gives up as soon as RSS grows past the bound (so that
  // a regression fails fast instead of eating the machine).
  const boundMb = 400;
  const r = child(`
    await settle();
    const rss0 = process.memoryUsage.rss();
    let peakMb = 0, made = 0;
    for (; made < 2000 && peakMb < ${boundMb}; made++) {
      const opt = make();
      opt.predict();
      opt.update(0.5, 0.3, 1);
      if (made % 20 === 19) {
        await tick();
        peakMb = Math.max(peakMb, (process.memoryUsage.rss() - rss0) / 2 ** 20);
      }
    }
    await settle();
    console.log(JSON.stringify({ made, peakMb }));
  `);
  console.log(`dropped optimizers: ${r.made} made, RSS growth at most ${r.peakMb.toFixed(0)} MB`);
  expect(r.made).toBe(2000);
  expect(r.peakMb).toBeLessThan(boundMb);
});

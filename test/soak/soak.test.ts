// A short soak of the native backend: optimizers created and disposed (or dropped) by the hundred,
// with steps, must not leave threads or memory behind. Threads are counted in /proc/self/task
// (Linux; elsewhere the test skips, saying why), memory as the process's RSS.
//
// Plain `npx jest` runs it: gc() is reached without --expose-gc (v8.setFlagsFromString, then a
// fresh vm context, which gets the function); `node --expose-gc node_modules/.bin/jest test/soak`
// works as well.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { KoalaM, nativeStatus } from '../../lib';

const PROC = '/proc/self/task';
const skip = !existsSync(PROC) ? `no ${PROC} to count threads in (Linux only)` : !nativeStatus().available ? `the native addon does not load: ${nativeStatus().reason}` : '';
if (skip) console.warn(`soak skipped: ${skip}`);
const maybe = skip ? test.skip : test;

function getGc(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

const threads = () => readdirSync(PROC).length;
const rssMb = () => process.memoryUsage.rss() / 2 ** 20;
const tick = () => new Promise((resolve) => setImmediate(resolve));

async function settle(gc: () => void): Promise<void> {
  // Node-API finalizers may run after the collection, from the event loop: collect, let them run, twice.
  for (let k = 0; k < 3; k++) {
    gc();
    await tick();
  }
}

// 140,000 float32 parameters: two threads' worth (one per 65,536), so each optimizer with
// threads: 2 runs a pool of its own today (one worker thread), and owns 1.1 MB of native state.
const N = 140_000;
const layers = () => {
  const param = new Float32Array(N).map((_, i) => Math.sin(i));
  const grad = new Float32Array(N).fill(0.01);
  return [{ param, grad }];
};

describe('soak (native backend)', () => {
  maybe('300 create / step / dispose cycles leave no thread and no memory behind', async () => {
    const gc = getGc();
    const shared = layers();
    const cycle = () => {
      const opt = new KoalaM(shared, { backend: 'native', threads: 2 });
      opt.predict();
      expect(opt.update(0.5, 0.3).applied).toBe(true);
      opt.dispose();
    };
    // Rounds of 50 cycles (56 MB of native state each), settled after each: freed memory is
    // reused by the next round, leaked memory adds up. The first rounds warm up (the allocator
    // settles on where it puts blocks of 0.5 MB).
    const rss: number[] = [];
    const counts: number[] = [];
    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 50; k++) cycle();
      await settle(gc);
      rss.push(rssMb());
      counts.push(threads());
    }
    console.log(`create/dispose: threads ${counts.join(', ')}; RSS ${rss.map((m) => m.toFixed(0)).join(', ')} MB after each round of 50`);
    expect(Math.max(...counts.slice(2))).toBeLessThanOrEqual(counts[1]);
    expect(rss[5] - Math.min(rss[1], rss[2])).toBeLessThan(32); // 4 rounds allocated 220 MB
  });

  maybe('dropped optimizers (never disposed) are freed when collected', async () => {
    const gc = getGc();
    const shared = layers();
    // Rounds of 40 dropped optimizers (45 MB of native state each round), collected after each:
    // freed memory is reused by the next round, leaked memory adds up.
    const round = async () => {
      for (let k = 0; k < 40; k++) {
        const opt = new KoalaM(shared, { backend: 'native', threads: 2 });
        opt.predict();
        opt.update(0.5, 0.3);
      }
      const dropped = threads();
      await settle(gc);
      return dropped;
    };
    await round(); // warm up
    const [t0, m0] = [threads(), rssMb()];
    const dropped = [];
    for (let k = 0; k < 4; k++) dropped.push(await round());
    const [t1, m1] = [threads(), rssMb()];
    console.log(`dropped, then gc(): threads ${t0} -> ${dropped.join(', ')} while dropped -> ${t1}, RSS ${m0.toFixed(0)} -> ${m1.toFixed(0)} MB over 4 rounds`);
    expect(t1).toBeLessThanOrEqual(t0 + 2); // + 2: a runtime helper thread that starts late
    expect(m1 - m0).toBeLessThan(32); // 4 rounds allocated 180 MB
  });

  // Failed while every native optimizer owned its pool's threads: dropped optimizers over the same
  // (shared) layers piled up, their threads and memory held until some unrelated collection. One
  // process-wide pool (Note [shared pool], native/cpu/pool.h) fixed it.
  maybe('dropped optimizers do not pile up threads or memory, with no explicit gc()', async () => {
    const gc = getGc();
    const shared = layers();
    await settle(gc);
    const [t0, m0] = [threads(), rssMb()];
    let [tMax, mMax] = [t0, m0];
    for (let k = 0; k < 150; k++) {
      const opt = new KoalaM(shared, { backend: 'native', threads: 2 });
      opt.predict();
      opt.update(0.5, 0.3);
      if (k % 10 === 9) {
        await tick(); // let finalizers of whatever V8 collected on its own run
        [tMax, mMax] = [Math.max(tMax, threads()), Math.max(mMax, rssMb())];
      }
    }
    console.log(`dropped, no gc(): threads ${t0} -> at most ${tMax}, RSS ${m0.toFixed(0)} -> at most ${mMax.toFixed(0)} MB (150 optimizers, 170 MB of native state)`);
    await settle(gc); // leave nothing to the next test
    expect(tMax - t0).toBeLessThanOrEqual(8);
    expect(mMax - m0).toBeLessThan(128);
  });
});

// A worker stepping a native optimizer, terminated at random points of its loop, forty times: the
// process must survive. It runs in a child process (an abort would take jest's worker down with
// it), on the compiled package (dist/, which npm ci builds: workers cannot load the TypeScript).
//
// It aborted while a call that failed during the worker's shutdown threw again from
// node-addon-api's callback wrapper ("terminate called after throwing an instance of
// 'Napi::Error'", exit 134).
const DIST = join(__dirname, '..', '..', 'dist', 'lib', 'index.js');
const terminateSkip = skip || (!existsSync(DIST) ? `no compiled package at ${DIST} (run npx tsc -p tsconfig.json)` : '');
if (terminateSkip && !skip) console.warn(`worker.terminate() soak skipped: ${terminateSkip}`);
(terminateSkip ? test.skip : test)('worker.terminate() while a worker steps a native optimizer does not take the process down', () => {
  const child = `
    const { Worker } = require('node:worker_threads');
    const src = \`const { KoalaM } = require(${JSON.stringify(DIST)});
      const param = new Float32Array(150000).fill(0.1), grad = new Float32Array(150000).fill(0.01);
      const opt = new KoalaM([{ param, grad }], { backend: 'native', threads: 2 });
      for (;;) { opt.predict(); opt.update(0.5, 0.3); opt.stateDict(); }\`;
    (async () => {
      for (let i = 0; i < 40; i++) {
        const w = new Worker(src, { eval: true });
        w.on('error', () => {});
        await new Promise((r) => setTimeout(r, 20 + ((i * 7) % 50)));
        await w.terminate();
      }
      console.log('survived');
    })();`;
  const out = spawnSync(process.execPath, ['-e', child], { encoding: 'utf8', timeout: 120_000 });
  console.log(`worker.terminate() x40: exit ${out.status}${out.signal ? ` (${out.signal})` : ''}${out.stderr ? `, stderr: ${out.stderr.trim().slice(0, 200)}` : ''}`);
  expect({ status: out.status, stdout: out.stdout.trim() }).toEqual({ status: 0, stdout: 'survived' });
});

// worker.terminate() while a worker is inside the addon must not take the process down (Note
// [unthrowable exceptions], native/binding/guard.h): a call that fails because the worker's
// environment is terminating throws an error nobody can catch any more, which node-addon-api must
// drop instead of aborting. A child process runs rounds of workers that create, step, query,
// misuse and dispose native optimizers in a loop, terminated at random moments; it must exit
// cleanly. Before the fix it aborted within a few rounds ("terminate called after throwing an
// instance of 'Napi::Error'").
import { spawnSync } from 'node:child_process';

import { nativeStatus } from '../../lib';

const skip = nativeStatus().available ? '' : `the native addon does not load: ${nativeStatus().reason}`;
if (skip) console.warn(`worker termination test skipped: ${skip}`);
const maybe = skip ? test.skip : test;

// The worker goes through every method of the binding, the throwing paths included (a call after
// dispose, malformed arguments), and creates the objects a step returns, so that termination can
// land in any of them.
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const addon = require(workerData.addon);
const sizes = [3000, 17, 5000];
const config = { variant: 0, dtype: 0, threads: 2, weightDecay: 5e-4, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9,
  adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };
parentPort.postMessage('ready');
for (;;) {
  const params = sizes.map((n) => new Float32Array(n).fill(0.5));
  const grads = sizes.map((n) => new Float32Array(n).fill(0.01));
  const opt = new addon.NativeOptimizer(config, params, grads, new Uint8Array(sizes.length));
  for (let s = 0; s < 5; s++) {
    opt.predict();
    opt.update(0.5, 0.3, 1);
    opt.lastStep();
    opt.setFilter(opt.getFilter());
    opt.readLayerState(0, 1, new Float32Array(17));
    try { opt.update(); } catch {}
    try { opt.readLayerState(0, 99, new Float32Array(1)); } catch {}
  }
  opt.dispose();
  try { opt.predict(); } catch {}
}
`;

const PARENT = `
const { Worker } = require('node:worker_threads');
const [addon, rounds] = [process.argv[1], Number(process.argv[2])];
(async () => {
  for (let r = 0; r < rounds; r++) {
    const workers = Array.from({ length: 4 }, () => new Worker(${JSON.stringify(WORKER)}, { eval: true, workerData: { addon } }));
    await Promise.all(workers.map((w) => new Promise((res) => w.once('message', res))));
    await new Promise((res) => setTimeout(res, Math.random() * 20));
    await Promise.all(workers.map((w) => w.terminate()));
  }
  console.log('clean exit');
})();
`;

// One worker at a time, the only one to load the addon, its passes on the shared pool (300,000
// parameters, 4 threads): its termination must not unload the code the pool's helpers run (Note
// [process-wide pool lifetime], native/cpu/pool.h). Before the addons were linked -z nodelete, this
// crashed (SIGSEGV) in most runs of 30.
const POOL_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const addon = require(workerData.addon);
const config = { variant: 0, dtype: 0, threads: 4, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9,
  adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };
const opt = new addon.NativeOptimizer(config, [new Float32Array(300000).fill(0.1)], [new Float32Array(300000).fill(0.01)], new Uint8Array(1));
parentPort.postMessage('ready');
for (;;) { opt.predict(); opt.update(0.5, 0.3, 1); }
`;

const POOL_PARENT = `
const { Worker } = require('node:worker_threads');
const [addon, rounds] = [process.argv[1], Number(process.argv[2])];
(async () => {
  for (let r = 0; r < rounds; r++) {
    const worker = new Worker(${JSON.stringify(POOL_WORKER)}, { eval: true, workerData: { addon } });
    await new Promise((res) => worker.once('message', res));
    await new Promise((res) => setTimeout(res, Math.random() * 10));
    await worker.terminate();
  }
  console.log('clean exit');
})();
`;

function runChild(script: string, rounds: number): void {
  const child = spawnSync(process.execPath, ['-e', script, nativeStatus().path!, String(rounds)], { encoding: 'utf8', timeout: 100_000 });
  if (child.status !== 0) console.log(`child: status ${child.status}, signal ${child.signal}\n${child.stderr.slice(-2000)}`);
  expect(child.signal).toBeNull();
  expect(child.status).toBe(0);
  expect(child.stdout.trim()).toBe('clean exit');
}

maybe('workers terminated while they step native optimizers leave the process running', () => {
  runChild(PARENT, 20);
});

maybe('a worker that alone loaded the addon, terminated while its passes run on the shared pool, leaves the process running', () => {
  runChild(POOL_PARENT, 30);
});

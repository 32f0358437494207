// The shared thread pool (Note [shared pool], native/cpu/pool.h): many optimizers start no thread
// each; passes from several JS threads at once give the same results; and the caller's
// floating-point mode (flush-to-zero, denormals-are-zero) changes nothing (Note [pinned
// floating-point mode]). Each runs in a child process, so that its threads and its FPU mode are
// its own.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import { nativeStatus } from '../../lib';
import { devAddonStatus } from '../../bench/dev-addon';

const addonPath = nativeStatus().path;
const devPath = devAddonStatus().path;
if (!addonPath || !devPath) throw new Error(`the addons do not load: ${nativeStatus().reason} ${devAddonStatus().reason}`);

// Steps a KOALA-M (standard or lazy) over subnormal and normal float32 values and returns a hash of
// the parameters and the filter: `run(threads, lazy)`. Every call into the addon goes through
// native(f), which a script may replace (to run the calls in another floating-point mode).
const STEPPER = `
const { createHash } = require('node:crypto');
const addon = require(${JSON.stringify(addonPath)});
let native = (f) => f();
function run(threads, lazyPredict, steps = 6) {
  const sizes = [70001, 3, 90000];
  // Parameters around 1e-39 (subnormal in float32) and gradients mixing subnormal and normal values:
  // with denormals-are-zero they would read as 0, with flush-to-zero the results would round to 0.
  const params = sizes.map((n, l) => Float32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 0.5 : 1e-39) * Math.sin(l * 7 + i + 1)));
  const grads = sizes.map((n) => new Float32Array(n));
  const config = { variant: 0, dtype: 0, threads, weightDecay: 5e-4, eps: 1e-9, kappa: Math.fround(0.9), qP: Math.fround(0.01), q: 1, betaR: 0.9,
    adaptiveR: true, lazyPredict, p00: Math.fround(0.1), p01: 0, p11: Math.fround(0.1), qX: 0.01, sigma: 0.1, r: 1 };
  const opt = native(() => new addon.NativeOptimizer(config, params, grads, new Uint8Array(sizes.length)));
  for (let k = 0; k < steps; k++) {
    native(() => opt.predict());
    grads.forEach((g, l) => { for (let i = 0; i < g.length; i++) g[i] = (i % 5 === 0 ? 0.1 : 2e-39) * Math.cos(k + l + i * 0.37); });
    native(() => opt.update(0.5 + 0.01 * k, 0.3, 1));
  }
  const hash = createHash('sha256');
  params.forEach((p) => hash.update(new Uint8Array(p.buffer)));
  hash.update(new Uint8Array(opt.getFilter().buffer));
  opt.dispose();
  return hash.digest('hex');
}
`;

function child(script: string): unknown {
  return JSON.parse(execFileSync(process.execPath, ['-e', STEPPER + script], { encoding: 'utf8' }));
}

const x86 = (require(devPath) as { mxcsr(): number }).mxcsr() >= 0;
const FTZ_DAZ = 0x8040; // MXCSR bits 15 (flush to zero) and 6 (denormals are zero)

(x86 ? test : test.skip)('the caller\'s flush-to-zero / denormals-are-zero mode changes no result, at 1 and 2 threads', () => {
  // Only the addon's calls run in the mode: V8's own float32 stores would flush the inputs too. The
  // first optimizer is made in it, so the pool's helper starts in it.
  const r = child(`
const dev = require(${JSON.stringify(devPath)});
const initial = dev.mxcsr();
let modeAfter = initial;
native = (f) => {
  dev.mxcsr(initial | ${FTZ_DAZ});
  try { return f(); } finally { modeAfter = dev.mxcsr(initial); }
};
const inFtz = { x1: run(1, false), x2: run(2, false), lazy1: run(1, true), lazy2: run(2, true) };
native = (f) => f();
const plain = { x1: run(1, false), x2: run(2, false), lazy1: run(1, true), lazy2: run(2, true) };
console.log(JSON.stringify({ inFtz, plain, modeAfter, initial }));
`) as { inFtz: Record<string, string>; plain: Record<string, string>; modeAfter: number; initial: number };
  const control = (mxcsr: number) => mxcsr & 0xffc0; // without the sticky exception flags
  expect(control(r.modeAfter)).toBe(control(r.initial | FTZ_DAZ)); // the caller's mode is restored after each call
  expect(r.plain.x2).toBe(r.plain.x1);
  expect(r.plain.lazy2).toBe(r.plain.lazy1);
  expect(r.inFtz).toEqual(r.plain);
});
if (!x86) console.log('not x86-64: the floating-point mode test is skipped (the mode is pinned on x86-64 only)');

const hasProcTasks = existsSync('/proc/self/task');
(hasProcTasks ? test : test.skip)('a thousand optimizers, disposed or dropped, start no thread each', () => {
  const r = child(`
const { readdirSync } = require('node:fs');
const tasks = () => readdirSync('/proc/self/task').length;
run(2, false, 1); // the pool's one helper for threads: 2
const before = tasks();
const kept = [];
for (let i = 0; i < 1000; i++) {
  const sizes = [65536, 65536];
  const params = sizes.map((n) => new Float32Array(n).fill(0.5));
  const grads = sizes.map((n) => new Float32Array(n).fill(0.01));
  const config = { variant: i % 2, dtype: 0, threads: 2, weightDecay: 0, eps: 1e-9, kappa: Math.fround(0.9), qP: Math.fround(0.01), q: 1, betaR: 0.9,
    adaptiveR: true, lazyPredict: false, p00: Math.fround(0.1), p01: 0, p11: Math.fround(0.1), qX: 0.01, sigma: 0.1, r: 1 };
  const opt = new addon.NativeOptimizer(config, params, grads, new Uint8Array(2));
  opt.predict();
  opt.update(0.5, 0.3, 1);
  if (i % 2) opt.dispose(); else kept.push(opt);
}
console.log(JSON.stringify({ before, after: tasks(), threads: kept[0].threadsInUse() }));
`) as { before: number; after: number; threads: number };
  expect(r.threads).toBe(2);
  expect(r.after).toBe(r.before);
});
if (!hasProcTasks) console.log('no /proc/self/task here: the thread count test is skipped');

test('passes from four JS threads at once (worker_threads) give the results of one thread alone', () => {
  const r = child(`
const { Worker } = require('node:worker_threads');
const alone = [run(2, false, 20), run(2, true, 20)];
const workerSource = ${JSON.stringify(STEPPER)} + "require('node:worker_threads').parentPort.postMessage([run(2, false, 20), run(2, true, 20)]);";
const workers = [0, 1, 2].map(() => new Promise((resolve, reject) => {
  const w = new Worker(workerSource, { eval: true });
  w.once('message', resolve);
  w.once('error', reject);
}));
const main = [run(2, false, 20), run(2, true, 20)];
Promise.all(workers).then((fromWorkers) => console.log(JSON.stringify({ alone, main, fromWorkers })));
`) as { alone: string[]; main: string[]; fromWorkers: string[][] };
  expect(r.main).toEqual(r.alone);
  for (const w of r.fromWorkers) expect(w).toEqual(r.alone);
});

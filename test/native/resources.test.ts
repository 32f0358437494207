// Resources the system refuses become coded errors, never an abort (Note [coded native errors],
// native/binding/guard.h): an optimizer whose state does not fit in memory throws
// ERR_KOALA_OUT_OF_MEMORY, and threads the system refuses to start give ERR_KOALA_NATIVE (or fewer
// threads, where the pool does with those it has); the process goes on, and a small optimizer
// still steps. Each case runs in a child process whose address space is capped (prlimit --as,
// set on itself once its arrays exist), so that nothing here eats the machine's memory: the
// arrays are never touched, and the state the optimizer asks for is refused before it is.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

import { nativeStatus } from '../../lib';
import { addonPaths } from '../../lib/native';

function prlimitPath(): string | null {
  return ['/usr/bin/prlimit', '/bin/prlimit'].find((p) => existsSync(p)) ?? null;
}

const skip = !nativeStatus().available
  ? `the native addon does not load: ${nativeStatus().reason}`
  : process.platform !== 'linux' || !existsSync('/proc/self/status')
    ? 'capping a process address space is done with Linux tools here'
    : !prlimitPath()
      ? 'no prlimit (util-linux) to cap the child process address space'
      : '';
if (skip) console.warn(`resource tests skipped: ${skip}`);
const maybe = skip ? test.skip : test;

// argv: addon, prlimit, variant (0 KOALA-M, 1 KOALA-V), dtype, elements, threads, headroom (MiB
// of address space left once the arrays exist). Prints one line per attempt, then whether a small
// optimizer still steps.
const CHILD = `
const { execFileSync } = require('node:child_process');
const { readFileSync } = require('node:fs');
const [addonPath, prlimit, variant, dtype, n, threads, headroomMb] = process.argv.slice(1);
const addon = require(addonPath);
const config = (over) => ({ variant: Number(variant), dtype: Number(dtype), threads: Number(threads), weightDecay: 0, eps: 1e-9, kappa: 0.9,
  qP: 0.01, q: 1, betaR: 0.9, adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1, ...over });
const Arr = dtype === '0' ? Float32Array : Float64Array;
const params = [new Arr(Number(n))];
const grads = [new Arr(Number(n))];
const small = [new Arr(10).fill(0.5)], smallGrads = [new Arr(10).fill(0.01)];
const vmKb = Number(/VmSize:\\s*(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
execFileSync(prlimit, ['--pid', String(process.pid), '--as=' + (vmKb + Number(headroomMb) * 1024) * 1024]);
const lines = [];
for (let k = 0; k < 3; k++) {
  try {
    const opt = new addon.NativeOptimizer(config({}), params, grads, new Uint8Array(1));
    opt.predict();
    opt.update(0.5, 0.3, 1);
    lines.push('stepped ' + opt.lastStep().status);
    opt.dispose();
  } catch (e) {
    lines.push('error ' + e.code + ': ' + e.message);
  }
}
const opt = new addon.NativeOptimizer(config({ threads: 1 }), small, smallGrads, new Uint8Array(1));
opt.predict();
opt.update(0.5, 0.3, 1);
lines.push('small ' + opt.lastStep().status);
console.log(lines.join('\\n'));
`;

function run(variant: number, dtype: number, n: number, threads: number, headroomMb: number): string[] {
  const args = [nativeStatus().path!, prlimitPath()!, variant, dtype, n, threads, headroomMb].map(String);
  const child = spawnSync(process.execPath, ['-e', CHILD, ...args], { encoding: 'utf8', timeout: 60_000 });
  if (child.status !== 0) console.log(`child: status ${child.status}, signal ${child.signal}\n${child.stderr.slice(-2000)}`);
  expect(child.signal).toBeNull();
  expect(child.status).toBe(0);
  return child.stdout.trim().split('\n');
}

maybe('an optimizer state too large for memory is ERR_KOALA_OUT_OF_MEMORY, and the process goes on', () => {
  // KOALA-M over 256M float64 parameters: 2 GiB of velocities, then as much of averages, in 1 GiB
  // of headroom, which leaves V8 and the error's own allocations room enough.
  const lines = run(0, 1, 256 * 2 ** 20, 1, 1024);
  expect(lines.slice(0, 3)).toEqual(Array(3).fill("error ERR_KOALA_OUT_OF_MEMORY: out of memory: the optimizer's native state could not be allocated"));
  expect(lines[3]).toBe('small 0');
});

maybe('threads the system refuses to start are a coded error or fewer threads, never an abort', () => {
  // 16 threads' worth of float32 parameters (one per 65,536), 64 MiB of headroom: the state (8 MiB)
  // fits, the 8 MiB thread stacks do not all. The shared pool (Note [shared pool], cpu/pool.h) runs
  // on the threads it got when the system refuses one (std::system_error); where the refusal is
  // an allocation (std::bad_alloc), the optimizer throws ERR_KOALA_OUT_OF_MEMORY.
  const lines = run(0, 0, 16 * 65536, 16, 64);
  for (const line of lines.slice(0, 3)) {
    expect(line).toMatch(/^(stepped 0|error ERR_KOALA_NATIVE: the system refused a resource .*|error ERR_KOALA_OUT_OF_MEMORY: .*)$/);
  }
  expect(lines[3]).toBe('small 0');
  console.log(`with threads refused: ${lines.slice(0, 3).join('; ')}`);
});

// The CUDA binding's constructor builds its layer tables before any CUDA call, so running out of
// host memory there needs no GPU: it is ERR_KOALA_OUT_OF_MEMORY like the CPU's (it used to escape
// as a C++ exception, which aborts the process), and the addon goes on answering.
const cudaAddon = addonPaths('koala_optim_cuda').find((p) => existsSync(p));
(skip || !cudaAddon ? test.skip : test)('the CUDA binding out of host memory while it builds its tables: ERR_KOALA_OUT_OF_MEMORY, no abort', () => {
  const child = spawnSync(
    process.execPath,
    [
      '-e',
      `
const { execFileSync } = require('node:child_process');
const { readFileSync } = require('node:fs');
const [addonPath, prlimit] = process.argv.slice(1);
const addon = require(addonPath);
const n = 4e6; // 4M layers: the tables want about 300 MB
const ptrs = new Array(n).fill(1n << 40n), lengths = new Array(n).fill(1);
const config = { variant: 0, dtype: 0, threads: 1, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9, adaptiveR: true,
  lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1, deviceId: 0, stream: 0n };
const vmKb = Number(/VmSize:\\s*(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
execFileSync(prlimit, ['--pid', String(process.pid), '--as=' + (vmKb + 64 * 1024) * 1024]);
for (const [what, args] of [['huge', [config, ptrs, ptrs, lengths, new Uint8Array(n)]], ['one layer', [config, [1n << 40n], [2n << 40n], [1], new Uint8Array(1)]]]) {
  try {
    new addon.NativeCudaOptimizer(...args);
    console.log(what + ': built');
  } catch (e) {
    console.log(what + ': ' + e.code);
  }
}
`,
      cudaAddon!,
      prlimitPath()!,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (child.status !== 0) console.log(`child: status ${child.status}, signal ${child.signal}\n${child.stderr.slice(-2000)}`);
  expect(child.signal).toBeNull();
  expect(child.status).toBe(0);
  const [huge, one] = child.stdout.trim().split('\n');
  expect(huge).toBe('huge: ERR_KOALA_OUT_OF_MEMORY');
  // One layer gets as far as the device check: no driver here, or pointers no device holds.
  expect(one).toMatch(/^one layer: ERR_KOALA_(INVALID_DEVICE_POINTER|CUDA)$/);
});

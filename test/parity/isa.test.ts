// The CPU passes compiled for AVX-512, AVX2 and the baseline target give bitwise the same results,
// at 1 and 2 threads (Note [instruction sets], native/cpu/kernels.h). Each runs in a child
// process, the ISA being chosen once per process; KOALA_OPTIM_ISA=avx512|avx2|baseline forces one.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

import { nativeStatus } from '../../lib';

// Drives the addon's NativeOptimizer directly (the three variants, both dtypes, a standard and a lazy
// KOALA-M) and prints the ISA and a hash of every parameter and the filter state.
const SCRIPT = `
const { createHash } = require('node:crypto');
const addon = require(process.argv[1]);
const threads = Number(process.argv[2]);
const hash = createHash('sha256');
const { variant: V, dtype: D } = addon.protocol; // the addon's own constants
for (const [variant, dtype, lazyPredict] of [[V.momentum, D.float32, false], [V.momentum, D.float64, false], [V.momentum, D.float32, true], [V.vanilla, D.float32, false], [V.vanilla, D.float64, false], [V.plusPlus, D.float32, false], [V.plusPlus, D.float64, false]]) {
  const Arr = dtype === D.float32 ? Float32Array : Float64Array;
  // Every length of a last, partial block: 70001 and 16385 end in a chunk of 1 mod 8 elements,
  // 16386 in one of 2; 3, 20, 13, 38, 7: 3, 4, 5, 6, 7; 90000: whole blocks only.
  const sizes = [70001, 3, 16385, 90000, 16386, 20, 13, 38, 7];
  const params = sizes.map((n, l) => Arr.from({ length: n }, (_, i) => Math.sin(l * 7 + i)));
  const grads = sizes.map((n) => new Arr(n));
  const config = { variant, dtype, threads, weightDecay: 5e-4, eps: 1e-9, kappa: Math.fround(0.9), qP: Math.fround(0.01), q: 1, betaR: 0.9,
    adaptiveR: true, lazyPredict, symmetric: true, p00: Math.fround(0.1), p01: 0, p11: Math.fround(0.1), qX: 0.01, sigma: 0.1, r: 1 };
  const opt = new addon.NativeOptimizer(config, params, grads, new Uint8Array(sizes.length));
  for (let k = 0; k < 30; k++) {
    opt.predict();
    grads.forEach((g, l) => { for (let i = 0; i < g.length; i++) g[i] = Math.cos(k + l + i * 0.37) * 0.1; });
    if (variant === 2) {
      opt.update(0.5 + 0.01 * k, 0.3, 1);
    } else {
      // The update's halves, so that the layer sums themselves are compared too.
      const sums = new Float64Array(3 * sizes.length);
      opt.updatePartial(sums);
      hash.update(new Uint8Array(sums.buffer));
      opt.updateFinish(sums, 0.5 + 0.01 * k, 0.3, 1);
    }
  }
  params.forEach((p) => hash.update(new Uint8Array(p.buffer)));
  hash.update(new Uint8Array(Float64Array.from(Object.values(opt.getFilter())).buffer));
  if (variant === 2) {
    const scalars = new Float64Array(4 * sizes.length);
    opt.readLayerScalars(scalars);
    hash.update(new Uint8Array(scalars.buffer));
  }
  opt.dispose();
}
console.log(JSON.stringify({ isa: addon.isa, hash: hash.digest('hex') }));
`;

function run(isa: string | undefined, threads = 2, addon = nativeStatus().path!): { isa: string; hash: string } {
  const env = { ...process.env };
  delete env.KOALA_OPTIM_ISA;
  if (isa !== undefined) env.KOALA_OPTIM_ISA = isa;
  const out = execFileSync(process.execPath, ['-e', SCRIPT, addon, String(threads)], { env, encoding: 'utf8' });
  return JSON.parse(out) as { isa: string; hash: string };
}

const ISAS = ['avx512', 'avx2', 'baseline'] as const;

test('the AVX-512, AVX2 and baseline passes agree bitwise, at 1 and 2 threads', () => {
  const baseline = run('baseline', 1);
  expect(baseline.isa).toBe('baseline');
  const ran: string[] = [];
  for (const isa of ISAS) {
    for (const threads of [1, 2]) {
      const r = run(isa, threads);
      if (r.isa !== isa) {
        // Asked for a set this processor or build lacks: the fallback says so, and still agrees.
        expect(r.isa).toMatch(new RegExp(`^(avx512|avx2|baseline) \\(KOALA_OPTIM_ISA=${isa}: not supported`));
        console.log(`no ${isa} passes here, skipped: ${r.isa}`);
      } else {
        ran.push(`${isa} x${threads}`);
      }
      expect(r.hash).toBe(baseline.hash);
    }
  }
  console.log(`bitwise equal: ${ran.join(', ')}`);
});

// Note [emulated AVX-512] (native/cpu/passes.h): the test build whose AVX-512 passes, the same
// code on the same 64-byte vectors, run on AVX2. In CI it must be there (.ci/run builds it).
const EMULATED = resolve(__dirname, '../../build-cmake/Release/koala_optim_avx512_emulated.node');

test('the AVX-512 passes emulated on AVX2 agree bitwise with the baseline, at 1 and 2 threads', () => {
  if (!existsSync(EMULATED)) {
    const why = `${EMULATED} is not built (npm run build:avx512-emulated)`;
    if (process.env.CI) throw new Error(why);
    console.log(`skipped: ${why}`);
    return;
  }
  const baseline = run('baseline', 1);
  for (const threads of [1, 2]) {
    const r = run('avx512', threads, EMULATED);
    if (r.isa !== 'avx512') {
      // The emulation is AVX2 code: a processor without AVX2 and FMA cannot run it.
      expect(r.isa).toMatch(/^baseline \(KOALA_OPTIM_ISA=avx512: not supported/);
      console.log(`the emulated AVX-512 passes need AVX2 and FMA, which this processor lacks: skipped (${r.isa})`);
      return;
    }
    expect(r.hash).toBe(baseline.hash);
  }
});

test('without KOALA_OPTIM_ISA the default set runs; an unknown name falls back to it and says so', () => {
  const chosen = run(undefined);
  expect(ISAS).toContain(chosen.isa);
  const unknown = run('sse9');
  expect(unknown.isa).toBe(`${chosen.isa} (KOALA_OPTIM_ISA=sse9: unknown, expected avx512, avx2 or baseline)`);
  expect(unknown.hash).toBe(chosen.hash);
});

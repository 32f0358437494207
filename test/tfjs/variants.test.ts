// The main job's --variant and --weight-decay: parsed, mapped to KOALA's options, and trained with.
import { parseArgs } from '../../examples/mnist/main';
import { createTrainer, VARIANTS, variantOptions } from '../../examples/mnist/optimizers';
import { silentReporter } from '../../examples/mnist/progress';
import { DEFAULTS, runExperiment } from '../../examples/mnist/train';
import { KoalaMOptimizer, KoalaVOptimizer } from '../../lib/tfjs';

test('--variant and --weight-decay are parsed and checked', () => {
  expect(parseArgs([]).config).toMatchObject({ variant: 'official', weightDecay: 0 });
  expect(parseArgs(['--variant', 'paper-noise', '--weight-decay', '5e-4']).config).toMatchObject({ variant: 'paper-noise', weightDecay: 5e-4 });
  expect(() => parseArgs(['--variant', 'adam'])).toThrow(/--variant must be one of official, absolute-target, paper-noise, regularized, paper/);
  expect(() => parseArgs(['--weight-decay', '-1'])).toThrow(/--weight-decay must be a non-negative number/);
});

test('each variant gives KOALA-M and KOALA-V the options it names', () => {
  expect(VARIANTS.map((v) => variantOptions(v))).toEqual([
    {},
    { target: 'absolute' },
    { stateNoise: 'paper' },
    { direction: 'regularized' },
    { target: 'absolute', stateNoise: 'paper', direction: 'regularized' },
  ]);
  const m = createTrainer('koala-m', { variant: 'paper', weightDecay: 1e-4, threads: null });
  const v = createTrainer('koala-v', { variant: 'paper', weightDecay: 1e-4, threads: null });
  expect(m.lr).toBeInstanceOf(KoalaMOptimizer);
  expect((m.lr as KoalaMOptimizer).getConfig()).toMatchObject({ target: 'absolute', stateNoise: 'paper', weightDecay: 1e-4 });
  expect((v.lr as KoalaVOptimizer).getConfig()).toMatchObject({ target: 'absolute', direction: 'regularized', weightDecay: 1e-4 });
  expect((v.lr as KoalaVOptimizer).getConfig()).not.toHaveProperty('stateNoise', 'paper');
  [m, v].forEach((t) => t.dispose());
});

test('quick mode with every paper variant at once: KOALA-M and KOALA-V learn', async () => {
  const e = await runExperiment(
    { ...DEFAULTS, optimizers: ['koala-m', 'koala-v'], seeds: [1], epochs: 1, batch: 32, subset: 0.15, variant: 'paper', weightDecay: 1e-4 },
    silentReporter(),
  );
  for (const r of e.runs) {
    expect(r.refused).toBe(0);
    expect(r.test[r.test.length - 1].accuracy).toBeGreaterThan(0.5); // chance is 0.1
  }
});

// The MNIST job in quick mode: a small stratified subset, two short epochs. KOALA-M learns (the
// train loss falls, the test accuracy is far above chance), the split is stratified and seeded,
// the runs share their start, and the results are written.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CLASSES, loadSplit } from '../../examples/mnist/data';
import { parseArgs } from '../../examples/mnist/main';
import { silentReporter } from '../../examples/mnist/progress';
import { pairedTTest, writeResults } from '../../examples/mnist/report';
import { DEFAULTS, runExperiment } from '../../examples/mnist/train';

test('the split is seeded and stratified', () => {
  const a = loadSplit({ seed: 5, subset: 0.1 });
  const b = loadSplit({ seed: 5, subset: 0.1 });
  expect(Buffer.from(a.test.images.buffer).equals(Buffer.from(b.test.images.buffer))).toBe(true);
  expect(a.train.size + a.test.size).toBeGreaterThan(990);
  const counts = (labels: Uint8Array) => Array.from({ length: CLASSES }, (_, d) => labels.filter((l) => l === d).length);
  const train = counts(a.train.labels);
  const test = counts(a.test.labels);
  // Every class is cut at 20% (to rounding): the test share per class stays near 0.2.
  test.forEach((t, d) => expect(Math.abs(t / (t + train[d]) - 0.2)).toBeLessThan(0.03));
  const other = loadSplit({ seed: 6, subset: 0.1 });
  expect(Buffer.from(other.test.images.buffer).equals(Buffer.from(a.test.images.buffer))).toBe(false);
});

test('quick mode: KOALA-M and Adam learn the digits from the same start; results are written', async () => {
  const e = await runExperiment({ ...DEFAULTS, optimizers: ['koala-m', 'adam'], seeds: [1], epochs: 2, batch: 32, subset: 0.15 }, silentReporter());
  expect(e.backend).toEqual({ name: 'wasm', fallback: null });
  expect(e.runs).toHaveLength(2);
  const [koala, adam] = e.runs;
  expect(koala.test[0]).toEqual(adam.test[0]); // the same initial weights
  for (const r of e.runs) {
    const curve = r.trainLoss.map((p) => p.loss);
    expect(curve[curve.length - 1]).toBeLessThan(0.5 * curve[0]);
    expect(r.test[r.test.length - 1].accuracy).toBeGreaterThan(0.7); // chance is 0.1
  }
  expect(koala.refused).toBe(0);
  expect(koala.adapter?.copyMs).toBeGreaterThan(0);
  expect(koala.adapter?.writes).toBe(2); // per step: after predict and after update

  const dir = mkdtempSync(join(tmpdir(), 'koala-mnist-'));
  try {
    await writeResults(dir, e);
    const summary = readFileSync(join(dir, 'summary.md'), 'utf8');
    expect(summary).toMatch(/\| KOALA-M \| 1 \| \d+\.\d\d ± 0\.00/);
    expect(summary).toMatch(/KOALA-M \(default options, lr 1\) ends \d+\.\d\d points (above|below) the best baseline, Adam/);
    expect(readFileSync(join(dir, 'curves.svg'), 'utf8')).toMatch(/^<svg[^>]*>[\s\S]*KOALA-M[\s\S]*<\/svg>$/);
    expect(JSON.parse(readFileSync(join(dir, 'mlp-b32-koala-m-seed1.json'), 'utf8')).test).toHaveLength(3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the command line parses its flags and refuses bad ones', () => {
  const { config, sweep, out } = parseArgs(['--epochs', '3', '--seeds', '4,5', '--model', 'cnn', '--optimizers', 'koala-m,sgd', '--schedule', 'multistep', '--sweep', 'batch', '--out', 'x']);
  expect(config).toMatchObject({ epochs: 3, seeds: [4, 5], model: 'cnn', optimizers: ['koala-m', 'sgd'], schedule: 'multistep' });
  expect([sweep, out]).toEqual([true, 'x']);
  expect(() => parseArgs(['--model', 'resnet'])).toThrow(/--model must be one of mlp, cnn/);
  expect(() => parseArgs(['--epochs'])).toThrow(/flag value pairs/);
  expect(() => parseArgs(['--lr', '1'])).toThrow(/unknown flag --lr/);
  expect(() => parseArgs(['--epochs', '0'])).toThrow(/at least 1/);
});

test('the verdict\'s paired t-test over seeds: a lead inside the spread is not significant, a steady one is', () => {
  const m = (values: [number, number][]) => new Map(values);
  const base = m([[1, 96.5], [2, 94.8], [3, 96.2]]);
  // Differences 0, 0.8, 0.1: mean 0.3, sd 0.436, t = 1.19 < 4.303 (2 degrees of freedom).
  const loose = pairedTTest(m([[1, 96.5], [2, 95.6], [3, 96.3]]), base)!;
  expect(loose.n).toBe(3);
  expect(loose.diff).toBeCloseTo(0.3, 12);
  expect(loose.t).toBeCloseTo(1.1921, 4);
  expect(loose.significant).toBe(false);
  // Differences 1, 1.1, 0.9: t = 17.3.
  const steady = pairedTTest(m([[1, 97.5], [2, 95.9], [3, 97.1], [4, 50]]), base)!; // seed 4 has no pair
  expect(steady.n).toBe(3);
  expect(steady.t).toBeCloseTo(17.3205, 3);
  expect(steady.significant).toBe(true);
  expect(pairedTTest(m([[1, 97]]), base)).toBeNull();
});

// The example trainer (npm start) learns: its test loss falls well below where it started.
import { train } from '../../examples/train-mlp';

test('the example MLP trainer fits its synthetic data with KOALA-M', () => {
  const { testLoss, backend } = train({ epochs: 4, log: () => undefined });
  expect(backend).toBe('native');
  expect(testLoss).toHaveLength(5);
  expect(testLoss[4]).toBeLessThan(0.1 * testLoss[0]);
  expect(testLoss[4]).toBeLessThan(testLoss[1]);
});

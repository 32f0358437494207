// The chunk plan that maps thread blocks (CUDA) and work units (CPU) to layers: every element of
// every layer in exactly one chunk, chunks never crossing a layer, in layer order; the CPU split
// into thread ranges balanced by elements. Runs on the CPU, in CI.
import { devKernels } from '../../bench/dev-addon';
import { resnet50 } from '../../bench/lists';

const dev = devKernels();
const plan = dev.planChunks;
const CHUNK = dev.chunkElems;

/** The first rule the plan of `sizes` breaks, or '' (one expect per plan: plans have millions of chunks). */
function coverProblem(sizes: number[], chunk: number): string {
  const p = plan(sizes, chunk, 1);
  if (p.firstChunk[0] !== 0 || p.firstChunk[sizes.length] !== p.layer.length) return 'first-chunk table does not span the plan';
  for (let l = 0; l < sizes.length; l++) {
    let next = 0; // the chunks of layer l must tile [0, n) in order
    for (let c = p.firstChunk[l]; c < p.firstChunk[l + 1]; c++) {
      if (p.layer[c] !== l) return `chunk ${c} belongs to layer ${p.layer[c]}, not ${l}`;
      if (p.begin[c] !== next) return `chunk ${c} starts at ${p.begin[c]}, not ${next}`;
      if (p.size[c] < 1 || p.size[c] > chunk) return `chunk ${c} has ${p.size[c]} elements`;
      next += p.size[c];
    }
    if (next !== sizes[l]) return `layer ${l}: chunks cover ${next} of ${sizes[l]} elements`;
    if (p.firstChunk[l + 1] - p.firstChunk[l] !== Math.ceil(sizes[l] / chunk)) return `layer ${l}: not the fewest chunks`;
  }
  return '';
}

test('the plan uses the 16,384-element chunks the kernels are written for', () => {
  expect(CHUNK).toBe(16384);
});

test.each([
  ['one element', [1]],
  ['exact multiples of a chunk', [CHUNK, 2 * CHUNK, 3 * CHUNK]],
  ['one past a multiple', [CHUNK + 1, 2 * CHUNK + 1]],
  ['many tiny layers', Array.from({ length: 1500 }, (_, i) => 1 + (i % 13))],
  ['a ResNet-50-shaped list', resnet50().sizes],
])('every element in exactly one chunk: %s', (_name, sizes) => {
  expect(coverProblem(sizes, CHUNK)).toBe('');
  expect(coverProblem(sizes, 7)).toBe(''); // a small chunk size exercises the same rules on many chunks
});

test.each([1, 2, 3, 8])('the split into %i parts is contiguous, complete and balanced by elements', (parts) => {
  const sizes = [100000, 3, 250000, 7, 40000, 90000];
  const p = plan(sizes, CHUNK, parts);
  const b = Array.from(p.bounds);
  expect(b).toHaveLength(parts + 1);
  expect(b[0]).toBe(0);
  expect(b[parts]).toBe(p.layer.length);
  for (let i = 1; i <= parts; i++) expect(b[i]).toBeGreaterThanOrEqual(b[i - 1]);
  const total = sizes.reduce((a, c) => a + c, 0);
  const work = b.slice(1).map((end, i) => p.size.slice(b[i], end).reduce((a, c) => a + c, 0));
  expect(work.reduce((a, c) => a + c, 0)).toBe(total);
  // No part is more than one chunk away from an even share.
  for (const w of work) expect(Math.abs(w - total / parts)).toBeLessThanOrEqual(CHUNK);
});

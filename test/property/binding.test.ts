// The raw binding (the addon's NativeOptimizer, below lib/'s validation) under random arguments and
// random call orders: every call returns or throws a coded KoalaError-shaped error, and the process
// never crashes (a crash takes the jest worker down, which fails this file). The public API's own
// property test is api.test.ts; this one reaches what a caller of the addon file could pass.
// KOALA_PROPERTY_RUNS and KOALA_PROPERTY_SEED raise the runs or change the seed.
import fc from 'fast-check';

import { nativeStatus } from '../../lib';

type Raw = Record<string, (...args: unknown[]) => unknown>;
type RawClass = new (...args: unknown[]) => Raw;

const RUNS = Number(process.env.KOALA_PROPERTY_RUNS ?? 400);
const SEED = Number(process.env.KOALA_PROPERTY_SEED ?? 20261129);
const skip = nativeStatus().available ? '' : `the native addon does not load: ${nativeStatus().reason}`;
if (skip) console.warn(`raw binding property test skipped: ${skip}`);

const METHODS = ['predict', 'update', 'lastStep', 'predictPartial', 'predictFinish', 'updatePartial', 'updateFinish',
  'getFilter', 'setFilter', 'readLayerState', 'writeLayerState', 'threadsInUse', 'dispose'];

const CONFIG = { variant: 0, dtype: 0, threads: 2, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9,
  adaptiveR: true, lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };

// Typed arrays of every kind the binding might be handed, of small random lengths (0 included).
const typedArray = fc.tuple(fc.constantFrom(Float32Array, Float64Array, Uint8Array, Int32Array), fc.nat(40), fc.double({ noNaN: false }))
  .map(([Ctor, n, v]) => new Ctor(n).fill(v as never));

// Any value a caller could pass: numbers of every kind, other primitives, arrays, objects, typed arrays.
const anything: fc.Arbitrary<unknown> = fc.oneof(
  fc.double(),
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(NaN, Infinity, -Infinity, -0, 2 ** 53, 1e300, 4294967296),
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.string({ maxLength: 4 }),
  fc.bigInt({ min: -1n, max: 2n ** 64n }),
  typedArray,
  fc.array(fc.oneof(fc.double(), typedArray), { maxLength: 3 }),
  fc.dictionary(fc.constantFrom('p00', 'p01', 'p11', 'qX', 'sigma', 'r', 'pending', 'steps', 'status'), fc.oneof(fc.double(), fc.string({ maxLength: 2 }))),
);

// A construction: mostly a valid one (so that the methods are reached), sometimes a config field
// or a layer list replaced by anything.
const mostly = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<T>) => fc.oneof({ arbitrary: good, weight: 6 }, { arbitrary: bad, weight: 1 });
// The memory under the layers: plain arrays, views at an offset into a SharedArrayBuffer, or views
// of resizable ArrayBuffers, fixed-length at an offset or length-tracking (Note [attachment check]).
const MEMORY = ['plain', 'shared', 'resizable-fixed', 'resizable-tracking'] as const;
type Memory = (typeof MEMORY)[number];
type Resizable = ArrayBuffer & { resize(bytes: number): void; readonly maxByteLength: number; readonly resizable: boolean };
const resizable = (bytes: number, maxByteLength: number): Resizable =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(bytes, { maxByteLength });

function layerArray(Arr: Float32ArrayConstructor | Float64ArrayConstructor, memory: Memory, n: number, value: number): Float32Array | Float64Array {
  const b = Arr.BYTES_PER_ELEMENT;
  const a =
    memory === 'plain' ? new Arr(n)
      : memory === 'shared' ? new Arr(new SharedArrayBuffer((n + 2) * b) as unknown as ArrayBuffer, b, n)
        : memory === 'resizable-fixed' ? new Arr(resizable((n + 2) * b, (n + 4) * b), b, n)
          : new Arr(resizable(n * b, (n + 4) * b));
  return a.fill(value);
}

// What can happen to that memory between two calls: a resizable buffer resized (to anything from
// empty to its largest), a buffer detached (transferred away).
const memoryEvent = fc.oneof(
  fc.tuple(fc.constant('@resize'), fc.tuple(fc.nat(3), fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }))),
  fc.tuple(fc.constant('@detach'), fc.tuple(fc.nat(3), fc.boolean())),
) as fc.Arbitrary<[string, unknown[]]>;

const construction = fc.record({
  memory: fc.constantFrom(...MEMORY),
  variant: mostly(fc.constantFrom(0, 1), fc.constantFrom(2, -1, 0.5, NaN)),
  dtype: mostly(fc.constantFrom(0, 1), fc.constantFrom(7, -1)),
  threads: mostly(fc.constantFrom(1, 2), fc.constantFrom(0, -5, NaN, 1e300)),
  lengths: mostly(fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 3 }), fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 })),
  brokenField: mostly(fc.constant(null), fc.tuple(fc.constantFrom(...Object.keys(CONFIG), 'modelElems'), anything)),
  brokenArg: mostly(fc.constant(null), fc.tuple(fc.integer({ min: 0, max: 3 }), anything)),
});

// Methods with random arguments, and the well-formed calls in between, so that steps really run.
const wellFormed = fc.constantFrom<[string, unknown[]]>(['predict', []], ['update', [0.5, 0.3, 1]], ['lastStep', []], ['getFilter', []], ['threadsInUse', []]);
const calls = fc.array(
  fc.oneof(
    { arbitrary: wellFormed, weight: 4 },
    { arbitrary: fc.tuple(fc.constantFrom(...METHODS.filter((m) => m !== 'dispose')), fc.array(anything, { maxLength: 4 })), weight: 4 },
    { arbitrary: memoryEvent, weight: 1 },
    { arbitrary: fc.constant<[string, unknown[]]>(['dispose', []]), weight: 1 },
  ),
  { minLength: 1, maxLength: 12 },
);

/** A memory event on layer `l`'s param or grad (the test's, not a call into the binding). */
function happen(event: string, args: unknown[], params: (Float32Array | Float64Array)[], grads: (Float32Array | Float64Array)[]): string {
  const [l, grad] = args as [number, boolean];
  const a = (grad ? grads : params)[l % params.length];
  const buffer = a.buffer as Resizable | SharedArrayBuffer;
  if (event === '@resize') {
    if (!(buffer instanceof ArrayBuffer) || !buffer.resizable) return 'not resizable';
    try {
      buffer.resize(Math.floor((args[2] as number) * buffer.maxByteLength));
    } catch {
      return 'detached already';
    }
    return 'resized';
  }
  if (buffer instanceof SharedArrayBuffer) return 'shared: cannot detach';
  try {
    structuredClone(buffer, { transfer: [buffer] });
  } catch {
    return 'detached already';
  }
  return 'detached';
}

/** The outcome of one call: 'ok', or the error's code (a TypeError from V8's own receiver check counts as coded). */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_KOALA_')) return code;
    throw new Error(`an uncoded error: ${String(e)}`);
  }
}

(skip ? test.skip : test)(`random arguments and call orders on the raw binding: coded errors or success, never a crash (${RUNS} runs, seed ${SEED})`, () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Native = (require(nativeStatus().path!) as { NativeOptimizer: RawClass }).NativeOptimizer;
  const tally = new Map<string, number>();
  const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
  fc.assert(
    fc.property(construction, calls, (c, sequence) => {
      const Arr = c.dtype === 1 ? Float64Array : Float32Array;
      const config: Record<string, unknown> = { ...CONFIG, variant: c.variant, dtype: c.dtype, threads: c.threads };
      if (c.brokenField) config[c.brokenField[0]] = c.brokenField[1];
      const params = c.lengths.map((n) => layerArray(Arr, c.memory, n, 0.5));
      const grads = c.lengths.map((n) => layerArray(Arr, c.memory, n, 0.1));
      const args: unknown[] = [config, params, grads, new Uint8Array(c.lengths.length)];
      if (c.brokenArg) args[c.brokenArg[0]] = c.brokenArg[1];
      let opt: Raw | null = null;
      count(`construction: ${outcome(() => (opt = new Native(...args)))}`);
      if (!opt) return;
      const live = opt as Raw;
      for (const [method, methodArgs] of sequence) {
        if (method.startsWith('@')) count(`${method}: ${happen(method, methodArgs, params, grads)}`);
        else count(`${method}: ${outcome(() => live[method](...methodArgs))}`);
      }
      outcome(() => live.dispose());
    }),
    { numRuns: RUNS, seed: SEED },
  );
  console.log([...tally].sort().map(([k, n]) => `  ${k}: ${n}`).join('\n'));
  // The runs reach successful constructions and calls as well as refusals.
  for (const key of ['construction: ok', 'construction: ERR_KOALA_INVALID_LAYERS', 'getFilter: ok', 'predict: ok', 'update: ok', 'setFilter: ERR_KOALA_INVALID_ARGUMENT',
    '@resize: resized', '@detach: detached', 'predict: ERR_KOALA_DETACHED']) {
    expect([key, (tally.get(key) ?? 0) > 0]).toEqual([key, true]);
  }
});

// The raw binding (the addon's NativeOptimizer, below lib/'s validation) stays memory-safe whatever
// it is called with: malformed calls get a coded error, never a crash (native/binding/cpu_addon.cc
// keeps the cheap invariants for that). Each case names the call and the code it must throw.
import { nativeStatus } from '../../lib';

interface RawOptimizer {
  predict(): boolean;
  update(...args: unknown[]): void;
  lastStep(): { status: number; skipped: number; maxGain: number };
  getFilter(): Record<string, number>;
  setFilter(...args: unknown[]): void;
  readLayerState(...args: unknown[]): void;
  writeLayerState(...args: unknown[]): void;
  threadsInUse(): number;
  dispose(): void;
}
type RawClass = new (...args: unknown[]) => RawOptimizer;

const skip = nativeStatus().available ? '' : `the native addon does not load: ${nativeStatus().reason}`;
if (skip) console.warn(`raw binding tests skipped: ${skip}`);
const describeNative = skip ? describe.skip : describe;

// eslint-disable-next-line @typescript-eslint/no-require-imports
const Native = (): RawClass => (require(nativeStatus().path!) as { NativeOptimizer: RawClass }).NativeOptimizer;

const CONFIG = { variant: 0, dtype: 0, threads: 1, weightDecay: 0, eps: 1e-9, kappa: 0.9, qP: 0.01, q: 1, betaR: 0.9, adaptiveR: true,
  lazyPredict: false, p00: 0.1, p01: 0, p11: 0.1, qX: 0.01, sigma: 0.1, r: 1 };
const SIZES = [5, 3];

function layers(Arr: Float32ArrayConstructor | Float64ArrayConstructor = Float32Array) {
  return { params: SIZES.map((n) => new Arr(n).fill(0.5)), grads: SIZES.map((n) => new Arr(n).fill(0.1)) };
}

function make(over: Record<string, unknown> = {}): RawOptimizer {
  const { params, grads } = layers();
  return new (Native())({ ...CONFIG, ...over }, params, grads, new Uint8Array(SIZES.length));
}

/** ES2024's resizable ArrayBuffer: Node 20 has it, this project's TypeScript library (ES2022) does not name it. */
type Resizable = ArrayBuffer & { resize(bytes: number): void };
const resizable = (bytes: number, maxByteLength: number): Resizable =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => Resizable)(bytes, { maxByteLength });

/** The code of what fn throws ('no error' when it returns). */
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return String((e as { code?: unknown }).code);
  }
  return 'no error';
}

describeNative('the raw NativeOptimizer binding', () => {
  test('malformed constructions are coded errors', () => {
    const C = Native();
    const { params, grads } = layers();
    const mask = new Uint8Array(SIZES.length);
    const cases: [string, () => unknown, string][] = [
      ['no arguments', () => new C(), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['a config that is not an object', () => new C(1, params, grads, mask), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['params not an array', () => new C(CONFIG, params[0], grads, mask), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['no layers', () => new C(CONFIG, [], [], new Uint8Array(0)), 'ERR_KOALA_INVALID_LAYERS'],
      ['fewer grads than params', () => new C(CONFIG, params, grads.slice(1), mask), 'ERR_KOALA_INVALID_LAYERS'],
      ['a param that is a number', () => new C(CONFIG, [1, params[1]], grads, mask), 'ERR_KOALA_INVALID_ARRAY'],
      ['a grad that is a number', () => new C(CONFIG, params, [grads[0], 7], mask), 'ERR_KOALA_INVALID_ARRAY'],
      ['a grad that is a plain array', () => new C(CONFIG, params, [grads[0], [0, 0, 0]], mask), 'ERR_KOALA_INVALID_ARRAY'],
      ['a param of the other dtype', () => new C(CONFIG, [new Float64Array(5), params[1]], grads, mask), 'ERR_KOALA_DTYPE_MISMATCH'],
      ['a grad shorter than its param', () => new C(CONFIG, params, [grads[0], new Float32Array(2)], mask), 'ERR_KOALA_INVALID_LAYERS'],
      ['a grad over its param', () => new C(CONFIG, params, [params[0], grads[1]], mask), 'ERR_KOALA_OVERLAP'],
      ['a skip mask of the wrong length', () => new C(CONFIG, params, grads, new Uint8Array(1)), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['a skip mask of the wrong type', () => new C(CONFIG, params, grads, new Float64Array(2)), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['a config field missing', () => new C({ ...CONFIG, kappa: undefined }, params, grads, mask), 'ERR_KOALA_INVALID_OPTION'],
      ['a config field of the wrong type', () => new C({ ...CONFIG, eps: '1' }, params, grads, mask), 'ERR_KOALA_INVALID_OPTION'],
    ];
    for (const [what, fn, code] of cases) expect([what, codeOf(fn)]).toEqual([what, code]);
  });

  test("a getter that throws while the binding reads its arguments: the caller's error, no crash", () => {
    const C = Native();
    const { params, grads } = layers();
    const mask = new Uint8Array(SIZES.length);
    const boom = () => {
      throw new Error('boom');
    };
    const config = Object.defineProperty({ ...CONFIG }, 'kappa', { get: boom, enumerable: true });
    const trap = Object.defineProperty([...params], '1', { get: boom });
    for (const make of [() => new C(config, params, grads, mask), () => new C(CONFIG, trap, grads, mask)]) {
      expect(() => make()).toThrow('boom');
    }
    // A Proxy is not an array to the binding (napi_is_array): a coded error.
    expect(codeOf(() => new C(CONFIG, new Proxy(params, {}), grads, mask))).toBe('ERR_KOALA_INVALID_ARGUMENT');
    const opt = new C(CONFIG, params, grads, mask);
    const snapshot = Object.defineProperty({ ...opt.getFilter() }, 'r', { get: boom, enumerable: true });
    expect(() => opt.setFilter(snapshot)).toThrow('boom');
    opt.predict();
    opt.update(0.5, 0.3, 1);
    expect(opt.lastStep().status).toBe(0);
  });

  test('out-of-range thread counts fall back to one thread', () => {
    for (const threads of [NaN, -5, 0, 1e300, 2 ** 31, Infinity]) {
      const opt = make({ threads });
      expect([threads, opt.threadsInUse()]).toEqual([threads, 1]);
      opt.predict();
      opt.update(0.5, 0.3, 1);
      expect(opt.lastStep().status).toBe(0);
    }
  });

  test('methods called on anything but a NativeOptimizer never reach C++', () => {
    // V8 checks the receiver against the class (napi_define_class gives the methods a signature):
    // a TypeError, "Illegal invocation", and nothing is unwrapped.
    const C = Native();
    const proto = C.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
    const methods = ['predict', 'update', 'lastStep', 'getFilter', 'setFilter', 'readLayerState', 'writeLayerState', 'threadsInUse', 'dispose'];
    const receivers: unknown[] = [undefined, null, 5, 'x', {}, new Map(), Object.create(C.prototype), () => 0];
    for (const name of methods) {
      for (const self of receivers) {
        let thrown: unknown = null;
        try {
          proto[name].call(self, 0, 0, new Float32Array(5));
        } catch (e) {
          thrown = e;
        }
        // (Compared by name: the error comes from the addon's realm, not jest's.)
        expect([name, (thrown as Error | null)?.name, (thrown as Error | null)?.message]).toEqual([name, 'TypeError', 'Illegal invocation']);
      }
    }
    const opt = make();
    opt.predict();
    opt.update(0.5, 0.3, 1);
    expect(opt.lastStep().status).toBe(0);
  });

  test('KOALA-V has no per-layer state to read or write', () => {
    const opt = make({ variant: 1 });
    for (const kind of [0, 1]) {
      expect(codeOf(() => opt.readLayerState(kind, 0, new Float32Array(5)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
      expect(codeOf(() => opt.writeLayerState(kind, 0, new Float32Array(5)))).toBe('ERR_KOALA_INVALID_ARGUMENT');
    }
  });

  test('layer state calls out of range are coded errors, and a valid one round-trips', () => {
    const opt = make();
    const detached = new Float32Array(5);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    const bad: [string, unknown[]][] = [
      ['no arguments', []],
      ['kind 2', [2, 0, new Float32Array(5)]],
      ['kind -1', [-1, 0, new Float32Array(5)]],
      ['kind NaN', [NaN, 0, new Float32Array(5)]],
      ['layer -1', [0, -1, new Float32Array(5)]],
      ['layer 2', [0, 2, new Float32Array(3)]],
      ['layer 2^32', [0, 2 ** 32, new Float32Array(5)]],
      ['layer 1e300', [0, 1e300, new Float32Array(5)]],
      ['layer Infinity', [0, Infinity, new Float32Array(5)]],
      ['layer as a string', [0, '0', new Float32Array(5)]],
      ['a plain array', [0, 0, [0, 0, 0, 0, 0]]],
      ['an array of the other dtype', [0, 0, new Float64Array(5)]],
      ['an array too short', [0, 0, new Float32Array(4)]],
      ['an array too long', [0, 0, new Float32Array(6)]],
      ['a detached array', [0, 0, detached]],
    ];
    for (const [what, args] of bad) {
      expect([what, 'read', codeOf(() => opt.readLayerState(...args))]).toEqual([what, 'read', 'ERR_KOALA_INVALID_ARGUMENT']);
      expect([what, 'write', codeOf(() => opt.writeLayerState(...args))]).toEqual([what, 'write', 'ERR_KOALA_INVALID_ARGUMENT']);
    }
    const v = Float32Array.from([1, 2, 3]);
    opt.writeLayerState(0, 1, v);
    const back = new Float32Array(3);
    opt.readLayerState(0, 1, back);
    expect(Array.from(back)).toEqual([1, 2, 3]);
  });

  test('malformed step and filter calls are coded errors, and change nothing', () => {
    const opt = make();
    const before = opt.getFilter();
    const cases: [string, () => unknown, string][] = [
      ['update()', () => opt.update(), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['update with a string loss', () => opt.update('0.5', 0.3, 1), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['update with a BigInt lr', () => opt.update(0.5, 0.3, 1n), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['setFilter()', () => opt.setFilter(), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['setFilter(null)', () => opt.setFilter(null), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['setFilter with a field missing', () => opt.setFilter({ ...before, p01: undefined }), 'ERR_KOALA_INVALID_OPTION'],
      ['setFilter with negative steps', () => opt.setFilter({ ...before, steps: -1 }), 'ERR_KOALA_INVALID_ARGUMENT'],
      ['setFilter with fractional steps', () => opt.setFilter({ ...before, steps: 1.5 }), 'ERR_KOALA_INVALID_ARGUMENT'],
    ];
    for (const [what, fn, code] of cases) expect([what, codeOf(fn)]).toEqual([what, code]);
    expect(opt.getFilter()).toEqual(before);
  });

  test('a detached parameter is a coded error at the next call', () => {
    const { params, grads } = layers();
    const opt = new (Native())(CONFIG, params, grads, new Uint8Array(SIZES.length));
    structuredClone(params[1].buffer, { transfer: [params[1].buffer] });
    expect(codeOf(() => opt.predict())).toBe('ERR_KOALA_DETACHED');
    expect(codeOf(() => opt.update(0.5, 0.3, 1))).toBe('ERR_KOALA_DETACHED');
  });

  test('a resizable buffer shrunk below a layer is a coded error at the next call; grown back, the step runs as before', () => {
    // Layer 1's param views bytes 8..20 of a resizable buffer: a fixed-length view at an offset,
    // and layer 0's grad is a length-tracking view of another (Note [attachment check]).
    const fixed = resizable(32, 64);
    const tracking = resizable(20, 64);
    const { params, grads } = layers();
    const p1 = new Float32Array(fixed, 8, 3);
    p1.set(params[1]);
    const g0 = new Float32Array(tracking);
    g0.set(grads[0]);
    const opt = new (Native())(CONFIG, [params[0], p1], [g0, grads[1]], new Uint8Array(SIZES.length));
    const twin = make();
    for (const [buffer, shrunk] of [[fixed, 16], [tracking, 16]] as const) {
      const before = buffer.byteLength;
      buffer.resize(shrunk);
      expect(codeOf(() => opt.predict())).toBe('ERR_KOALA_DETACHED');
      expect(codeOf(() => opt.update(0.5, 0.3, 1))).toBe('ERR_KOALA_DETACHED');
      buffer.resize(before); // the bytes it grows by read as zeros: the layers' values again
      p1.set(params[1]);
      g0.set(grads[0]);
    }
    for (const o of [opt, twin]) {
      o.predict();
      o.update(0.5, 0.3, 1);
    }
    const out = [new Float32Array(5), new Float32Array(5)];
    opt.readLayerState(0, 0, out[0]);
    twin.readLayerState(0, 0, out[1]);
    expect(out[0]).toEqual(out[1]);
    expect(twin.getFilter()).toEqual(opt.getFilter());
  });

  test('views of a SharedArrayBuffer step like plain arrays', () => {
    const shared = new SharedArrayBuffer(64);
    const { params, grads } = layers();
    const p0 = new Float32Array(shared, 4, 5);
    p0.set(params[0]);
    const opt = new (Native())(CONFIG, [p0, params[1]], grads, new Uint8Array(SIZES.length));
    const twin = make();
    for (const o of [opt, twin]) {
      o.predict();
      o.update(0.5, 0.3, 1);
    }
    const { params: twinParams } = layers();
    expect(p0).not.toEqual(twinParams[0]); // the step moved it
    expect(twin.getFilter()).toEqual(opt.getFilter());
  });

  test('every call after dispose() is ERR_KOALA_DISPOSED, and dispose() again is harmless', () => {
    const opt = make();
    opt.dispose();
    opt.dispose();
    const calls: [string, () => unknown][] = [
      ['predict', () => opt.predict()],
      ['update', () => opt.update(0.5, 0.3, 1)],
      ['lastStep', () => opt.lastStep()],
      ['getFilter', () => opt.getFilter()],
      ['setFilter', () => opt.setFilter({})],
      ['readLayerState', () => opt.readLayerState(0, 0, new Float32Array(5))],
      ['writeLayerState', () => opt.writeLayerState(0, 0, new Float32Array(5))],
      ['threadsInUse', () => opt.threadsInUse()],
    ];
    for (const [what, fn] of calls) expect([what, codeOf(fn)]).toEqual([what, 'ERR_KOALA_DISPOSED']);
  });
});

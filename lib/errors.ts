import { types } from 'node:util';

/**
 * Every error this package throws on misuse is a KoalaError with a stable `code`. It is thrown
 * before anything is modified: parameters, gradients and optimizer state stay as they were.
 * The README's error table lists every code (test/unit/errors.test.ts checks it against this list).
 */
export const ERROR_CODES = [
  'ERR_KOALA_INVALID_LAYERS', // not a non-empty array of { param, grad }, or an empty layer
  'ERR_KOALA_INVALID_ARRAY', // param or grad is not a Float32Array or Float64Array
  'ERR_KOALA_DTYPE_MISMATCH', // param and grad (or two layers) of different dtypes
  'ERR_KOALA_LENGTH_MISMATCH', // param and grad of different lengths
  'ERR_KOALA_DETACHED', // a buffer was detached (or shrunk) since construction
  'ERR_KOALA_OVERLAP', // a grad overlaps its param, or two layers share memory
  'ERR_KOALA_INVALID_OPTION', // unknown option, or a value of the wrong type or range
  'ERR_KOALA_INVALID_LOSS', // loss missing or not a number, or a negative lossSq
  'ERR_KOALA_PREDICT_REQUIRED', // update() without a predict() since the last applied update
  'ERR_KOALA_NON_FINITE', // NaN or Inf in a step, with the option onNonFinite: 'throw'
  'ERR_KOALA_DISPOSED', // a call after dispose()
  'ERR_KOALA_INVALID_STATE', // loadStateDict() given data that does not fit this optimizer
  'ERR_KOALA_NATIVE_UNAVAILABLE', // backend: 'native' asked for, but the addon does not load
  'ERR_KOALA_MIXED_MEMORY', // host arrays and device tensors in one optimizer
  'ERR_KOALA_INVALID_DEVICE_POINTER', // not device memory of the layer's device, misaligned, or malformed
  'ERR_KOALA_CUDA_UNAVAILABLE', // device tensors given, but no usable CUDA device or addon
  'ERR_KOALA_CUDA', // a CUDA runtime call failed (the message is CUDA's)
  'ERR_KOALA_STALE_INFO', // a device step's info read after a later update()
  'ERR_KOALA_SHARDED', // predict()/update() on a sharded optimizer, or a split call out of order
  'ERR_KOALA_INVALID_ARGUMENT', // a malformed call: a KoalaM method on another object, or into the native binding
  'ERR_KOALA_PEER_MISSING', // koala-optim/tfjs without @tensorflow/tfjs-core installed
  'ERR_KOALA_OUT_OF_MEMORY', // the native backend could not allocate an optimizer's state
  'ERR_KOALA_NATIVE', // the native backend failed otherwise (a thread the system refuses, a C++ exception); the message says what
] as const;

export type KoalaErrorCode = (typeof ERROR_CODES)[number];

export class KoalaError extends Error {
  readonly code: KoalaErrorCode;

  constructor(code: KoalaErrorCode, message: string) {
    super(message);
    this.name = 'KoalaError';
    this.code = code;
  }
}

export function fail(code: KoalaErrorCode, message: string): never {
  throw new KoalaError(code, message);
}

/**
 * Native errors carry a `code` string; give them the KoalaError class. (isNativeError, not
 * instanceof: the addon's errors come from the main realm even when this code runs in a vm context.)
 */
function asKoalaError(e: unknown): unknown {
  if (types.isNativeError(e) && !(e instanceof KoalaError)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_KOALA_')) {
      return new KoalaError(code as KoalaErrorCode, e.message);
    }
  }
  return e;
}

/** Runs a call into an addon, rethrowing its coded errors as KoalaErrors. */
export function nativeCall<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asKoalaError(e);
  }
}

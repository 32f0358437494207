/**
 * The development addon, koala_optim_dev.node (native/dev/): the benchmark's reference kernels (a
 * STREAM triad and copy, a fused Adam step, in the addon's own threaded code) and the test hooks,
 * kept out of the production koala_optim.node. The library never loads it; the benchmark and the
 * tests do.
 */
import { addonPaths, loadAddon, REBUILD_HINT, type LoadedAddon } from '../lib/native';

export interface DevAddon {
  /** The chunk plan (native/core/plan.h) of a layer list, split into `parts` ranges: for its tests. */
  planChunks(sizes: number[], chunkElems: number, parts: number): {
    layer: Float64Array;
    begin: Float64Array;
    size: Float64Array;
    firstChunk: Float64Array;
    bounds: Float64Array;
  };
  /** Elements per chunk of the plan, as in the production addon. */
  chunkElems: number;
  /** The instruction set the kernels run on (Note [instruction sets]). */
  isa: string;
  streamCopy(a: Float32Array, b: Float32Array, threads: number): void;
  streamTriad(a: Float32Array, b: Float32Array, c: Float32Array, s: number, threads: number): void;
  /**
   * The calling thread's MXCSR (SSE floating-point control) before the call, set to `value` if
   * given; -1 where there is none (not x86-64). For the floating-point mode tests.
   */
  mxcsr(value?: number): number;
  /** One fused Adam step; hyper = [lr, beta1, beta2, eps, step]. */
  adamStep(x: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, hyper: Float64Array, threads: number): void;
  /** The calling thread's MXCSR before the call, after setting it to `value` if given (-1 off x86-64): for the FPU-mode tests. */
  mxcsr(value?: number): number;
}

let loaded: LoadedAddon<DevAddon> | null = null;

/** The development addon's file (path), or why it does not load (reason). */
export function devAddonStatus(): LoadedAddon<DevAddon> {
  const paths = addonPaths('koala_optim_dev');
  loaded ??= loadAddon<DevAddon>(paths, `no development addon at ${paths.join(' or ')} (${REBUILD_HINT})`);
  return loaded;
}

/** The development addon, or throws saying why it does not load. */
export function devKernels(): DevAddon {
  const status = devAddonStatus();
  if (!status.module) throw new Error(`the benchmark needs the development addon: ${status.reason}`);
  return status.module;
}

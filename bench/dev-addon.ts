/**
 * The development addon, koala_optim_dev.node (native/dev/): the benchmark's reference kernels (a
 * STREAM triad and copy, a fused Adam step, in the addon's own threaded code) and the test hooks,
 * kept out of the production koala_optim.node. The library never loads it; the benchmark and the
 * tests do.
 */
import { resolve } from 'node:path';

import { addonPaths, loadAddon, REBUILD_HINT, type LoadedAddon } from '../lib/native';
import type { BackendConfig } from '../lib/options';
import type { BackendStep, FilterSnapshot } from '../lib/protocol';

export interface DevAddon {
  /** The chunk plan (native/core/plan.h) of a layer list, split into `parts` ranges: for its tests. */
  planChunks(sizes: number[], chunkElems: number, parts: number): {
    layer: Float64Array;
    begin: Float64Array;
    size: Float64Array;
    firstChunk: Float64Array;
    bounds: Float64Array;
  };
  /**
   * The CUDA optimizer's launch sequence (Note [launch errors], native/cuda/launch.h) over a scripted
   * error state: errors[0] is left by an earlier call, errors[1 + i] is launch i's.
   */
  launchSequence(errors: number[], launches: number, broken: boolean): { enqueued: number; error: string; broken: boolean };
  /**
   * The CUDA binding's device-scalar check (Note [device scalar check]): each call is
   * [slot, address, elemBytes, what the device query would answer ('' when good)]; returns
   * [the check's answer, whether it queried the device] per call.
   */
  scalarCheck(calls: [number, number, number, string][]): [string, boolean][];
  /**
   * The step sequence (native/core/step.h) over given layer sums ([hh, xx, gg] per layer): lanes 0
   * is the CPU's fold in layer order, lanes n (a power of two) the CUDA kernel's order (a fold per
   * lane, then a pairwise tree).
   */
  decideStep(
    config: BackendConfig,
    snapshot: FilterSnapshot,
    sums: Float64Array,
    loss: number,
    lossSq: number,
    lr: number,
    lanes: number,
  ): BackendStep & { snapshot: FilterSnapshot; skipMask: Uint8Array };
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
  /** The bytes V8 counts as external memory, what addons report included (Note [native memory reported]). */
  externalMemory(): number;
}

let loaded: LoadedAddon<DevAddon> | null = null;

/** KOALA_OPTIM_DEV_ADDON=path picks the file (the GPU check carries one), else the places addonPaths() names. */
export function devAddonStatus(): LoadedAddon<DevAddon> {
  const explicit = process.env.KOALA_OPTIM_DEV_ADDON;
  const paths = explicit ? [resolve(explicit)] : addonPaths('koala_optim_dev');
  loaded ??= loadAddon<DevAddon>(paths, `no development addon at ${paths.join(' or ')} (${REBUILD_HINT})`);
  return loaded;
}

/** The development addon, or throws saying why it does not load. */
export function devKernels(): DevAddon {
  const status = devAddonStatus();
  if (!status.module) throw new Error(`the benchmark needs the development addon: ${status.reason}`);
  return status.module;
}

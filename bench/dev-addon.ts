/**
 * The benchmark's reference kernels (a STREAM triad and copy, a fused Adam step, in the addon's own
 * threaded code). They belong in the development addon koala_optim_dev.node, which the library
 * never loads; where that addon is absent, the main addon's copies serve.
 */
import { addonPaths, loadAddon, nativeModule, nativeStatus } from '../lib/native';

export interface DevKernels {
  streamCopy(a: Float32Array, b: Float32Array, threads: number): void;
  streamTriad(a: Float32Array, b: Float32Array, c: Float32Array, s: number, threads: number): void;
  /** One fused Adam step; hyper = [lr, beta1, beta2, eps, step]. */
  adamStep(x: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, hyper: Float64Array, threads: number): void;
}

/** The kernels, or throws saying why no addon has them. */
export function devKernels(): DevKernels {
  const dev = loadAddon<DevKernels>(addonPaths('koala_optim_dev'), '');
  const kernels = dev.module ?? nativeModule();
  if (!kernels) throw new Error(`the benchmark needs the native addon: ${nativeStatus().reason}`);
  return kernels;
}

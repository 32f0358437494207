/**
 * Loads the native addon once. The build writes it to build-cmake/ (cmake-js, the default) or
 * build/ (node-gyp); KOALA_OPTIM_ADDON=path picks one file explicitly (CI runs the tests against
 * each build that way).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { Backend } from './backend';
import type { FloatArray } from './layers';
import type { BackendConfig } from './options';

interface NativeModule {
  NativeOptimizer: new (config: BackendConfig, params: FloatArray[], grads: FloatArray[], skipMask: Uint8Array) => Backend;
  /** Elements per chunk of the plan (native/core/plan.h). */
  chunkElems: number;
  /** The instruction set of the CPU passes in use: 'avx512', 'avx2' or 'baseline' (Note [instruction sets]). */
  isa: string;
}

// Compiled code lives in dist/lib/, the sources in lib/: the package root is found from either.
export const PACKAGE_ROOT =
  [resolve(__dirname, '..'), resolve(__dirname, '..', '..')].find((d) => existsSync(join(d, 'package.json'))) ?? resolve(__dirname, '..');
/** Where the builds put an addon: build-cmake/ (cmake-js, the default) or build/ (node-gyp). */
export function builtAddonPaths(file: string): string[] {
  return [join(PACKAGE_ROOT, 'build-cmake', 'Release', file), join(PACKAGE_ROOT, 'build', 'Release', file)];
}

const CANDIDATES = builtAddonPaths('koala_optim.node');

export interface LoadedAddon<M> {
  module: M | null;
  /** The file that loaded. */
  path: string | null;
  /** Why none loaded (empty when one did). */
  reason: string;
}

/** Requires the first of `paths` that exists and loads; `missing` is the reason when none exists. */
export function loadAddon<M>(paths: string[], missing: string): LoadedAddon<M> {
  const reasons: string[] = [];
  for (const path of paths.filter((p) => existsSync(p))) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return { module: require(path) as M, path, reason: '' };
    } catch (e) {
      reasons.push(`${path} does not load: ${(e as Error).message}`);
    }
  }
  return { module: null, path: null, reason: reasons.length > 0 ? reasons.join('; ') : missing };
}

let loaded: LoadedAddon<NativeModule> | null = null;

function load(): LoadedAddon<NativeModule> {
  const explicit = process.env.KOALA_OPTIM_ADDON;
  const paths = explicit ? [resolve(explicit)] : CANDIDATES;
  loaded ??= loadAddon<NativeModule>(paths, `no built addon at ${paths.join(' or ')} (run npm run build:native)`);
  return loaded;
}

export interface NativeStatus {
  available: boolean;
  /** The .node file in use, when available. */
  path: string | null;
  /** Why it is not available (empty when it is). */
  reason: string;
  /**
   * The instruction set of the CPU passes: 'avx512', 'avx2' or 'baseline', the widest the processor
   * supports unless KOALA_OPTIM_ISA names one; when that one is not supported (or unknown), the
   * widest followed by why, e.g. 'avx2 (KOALA_OPTIM_ISA=avx512: not supported by this processor or build)'.
   */
  isa: string | null;
}

export function nativeStatus(): NativeStatus {
  const l = load();
  return { available: l.module !== null, path: l.path, reason: l.reason, isa: l.module?.isa ?? null };
}

export function nativeModule(): NativeModule | null {
  return load().module;
}

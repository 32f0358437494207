/**
 * Loads the native addon once: the prebuild shipped in the npm tarball (prebuilds/<platform>-<arch>/),
 * else a local build, build-cmake/ (cmake-js, the default) or build/ (node-gyp) (Note [addon search]).
 * KOALA_OPTIM_ADDON=path picks one file explicitly (CI runs the tests against each build that way).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { Backend } from './backend';
import type { FloatArray } from './layers';
import type { BackendConfig } from './options';
import type { ProtocolConstants } from './protocol';

interface NativeModule {
  NativeOptimizer: new (config: BackendConfig, params: FloatArray[], grads: FloatArray[], skipMask: Uint8Array) => Backend;
  /** Elements per chunk of the plan (native/core/plan.h). */
  chunkElems: number;
  /** The instruction set of the CPU passes in use: 'avx512', 'avx2' or 'baseline' (Note [instruction sets]). */
  isa: string;
  /** The protocol's constants (native/include/koala/protocol.h), as lib/protocol.ts mirrors them. */
  protocol: ProtocolConstants;
}

// Compiled code lives in dist/lib/, the sources in lib/: the package root is found from either.
export const PACKAGE_ROOT =
  [resolve(__dirname, '..'), resolve(__dirname, '..', '..')].find((d) => existsSync(join(d, 'package.json'))) ?? resolve(__dirname, '..');

/** Where the prebuilt addons of this platform are (scripts/prebuild.js writes them there). */
export const PREBUILD_DIR = join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`);

/** How a user gets a native addon where none loads (the install script says the same). */
export const REBUILD_HINT =
  'npm rebuild koala-optim builds it from source (npm 12 and later first need `npm install-scripts approve koala-optim`: they run no unapproved install script); it needs a C++17 compiler, cmake and make (nvcc too for the CUDA addon)';

/**
 * Note [addon search]: the files an addon `name` (koala_optim, koala_optim_cuda, koala_optim_dev)
 * is looked for in, first that loads wins. The prebuild comes first: it is what the tarball ships
 * and needs no install script, and the install script builds from source only where it does not
 * load, so a consumer's build-cmake/ exists only where the prebuild is unusable. In the repository
 * prebuilds/ exists only after `npm run prebuilds` (for packing): delete it after changing native
 * code, or it shadows the fresh build.
 */
export function addonPaths(name: string): string[] {
  return [join(PREBUILD_DIR, `${name}.node`), join(PACKAGE_ROOT, 'build-cmake', 'Release', `${name}.node`), join(PACKAGE_ROOT, 'build', 'Release', `${name}.node`)];
}

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
  if (!loaded) {
    const paths = explicit ? [resolve(explicit)] : addonPaths('koala_optim');
    const l = loadAddon<NativeModule>(paths, `no addon at ${paths.join(' or ')}`);
    // The reason ends up in the js fallback's warning: it says how to get the native backend.
    loaded = l.module ? l : { ...l, reason: `${l.reason}. ${REBUILD_HINT}` };
  }
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

/**
 * TensorFlow.js in Node without native code: tfjs-core, the wasm backend (its .wasm files ship in
 * its npm package), and the cpu backend as the fallback.
 */
import { dirname, join } from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
// tfjs-core's CommonJS build registers no gradient functions; tfjs-layers' build registers them
// all (as the @tensorflow/tfjs bundle does). Without this import, training fails with "gradient
// function not found".
import '@tensorflow/tfjs-layers';

let wasmPathsSet = false;

export type BackendName = 'wasm' | 'cpu';

export interface BackendInfo {
  name: BackendName;
  /** Why the wasm backend was not used, when it was asked for and the cpu one runs instead. */
  fallback: string | null;
}

/** Selects the wasm backend (or cpu when asked), falling back to cpu, with the reason, if wasm fails. */
export async function initBackend(wanted: BackendName = 'wasm'): Promise<BackendInfo> {
  let fallback: string | null = null;
  if (wanted === 'wasm') {
    try {
      if (!wasmPathsSet) {
        setWasmPaths(join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), '/'));
        wasmPathsSet = true;
      }
      if (await tf.setBackend('wasm')) {
        await tf.ready();
        return { name: 'wasm', fallback };
      }
      fallback = 'the wasm backend did not initialize';
    } catch (e) {
      fallback = `the wasm backend failed: ${(e as Error).message}`;
    }
  }
  if (!(await tf.setBackend('cpu'))) throw new Error('neither the wasm nor the cpu tfjs backend initialized');
  await tf.ready();
  return { name: 'cpu', fallback };
}

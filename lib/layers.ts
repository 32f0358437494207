import { types } from 'node:util';

import { fail } from './errors';

export type FloatArray = Float32Array | Float64Array;
export type DType = 'float32' | 'float64';

/** One parameter tensor: its values and the buffer the trainer writes its gradient into. */
export interface Layer {
  param: FloatArray;
  grad: FloatArray;
  name?: string;
}

export interface LayerTable {
  params: FloatArray[];
  grads: FloatArray[];
  names: string[];
  lengths: number[];
  dtype: DType;
  total: number;
}

export function dtypeOf(a: unknown): DType | null {
  if (types.isFloat32Array(a)) return 'float32';
  if (types.isFloat64Array(a)) return 'float64';
  return null;
}

/** A detached ArrayBuffer refuses slice(); a SharedArrayBuffer is never detached. */
function isDetached(a: FloatArray): boolean {
  const buffer = a.buffer;
  if (types.isSharedArrayBuffer(buffer)) return false;
  try {
    (buffer as ArrayBuffer).slice(0, 0);
    return false;
  } catch {
    return true;
  }
}

/**
 * Checks the layer list once, at construction. Memory shared between two arrays is found by
 * ArrayBuffer identity and byte ranges (the native backend checks addresses as well).
 */
export function validateLayers(layers: unknown): LayerTable {
  if (!Array.isArray(layers) || layers.length === 0) {
    fail('ERR_KOALA_INVALID_LAYERS', 'layers must be a non-empty array of { param, grad, name? }');
  }
  const table: LayerTable = { params: [], grads: [], names: [], lengths: [], dtype: 'float32', total: 0 };
  layers.forEach((layer: unknown, i: number) => {
    if (typeof layer !== 'object' || layer === null) fail('ERR_KOALA_INVALID_LAYERS', `layer ${i} must be an object { param, grad, name? }`);
    const { param, grad, name } = layer as Record<string, unknown>;
    const label = typeof name === 'string' ? `layer ${i} (${name})` : `layer ${i}`;
    const pt = dtypeOf(param);
    const gt = dtypeOf(grad);
    if (pt === null || gt === null) {
      fail('ERR_KOALA_INVALID_ARRAY', `${label}: param and grad must be Float32Array or Float64Array`);
    }
    const p = param as FloatArray;
    const g = grad as FloatArray;
    if (isDetached(p) || isDetached(g)) fail('ERR_KOALA_DETACHED', `${label}: the buffer of its param or grad is detached`);
    if (pt !== gt) fail('ERR_KOALA_DTYPE_MISMATCH', `${label}: param is ${pt} but grad is ${gt}`);
    if (i > 0 && pt !== table.dtype) {
      fail('ERR_KOALA_DTYPE_MISMATCH', `${label} is ${pt} but layer 0 is ${table.dtype}: one optimizer takes one dtype`);
    }
    if (p.length !== g.length) fail('ERR_KOALA_LENGTH_MISMATCH', `${label}: param has ${p.length} elements but grad has ${g.length}`);
    if (p.length === 0) fail('ERR_KOALA_INVALID_LAYERS', `${label} is empty`);
    if (name !== undefined && typeof name !== 'string') fail('ERR_KOALA_INVALID_LAYERS', `${label}: name must be a string`);
    table.dtype = pt;
    table.params.push(p);
    table.grads.push(g);
    table.names.push(typeof name === 'string' ? name : `layer${i}`);
    table.lengths.push(p.length);
    table.total += p.length;
  });
  checkOverlap(table);
  return table;
}

function checkOverlap(table: LayerTable): void {
  const byBuffer = new Map<ArrayBufferLike, { begin: number; end: number; what: string; layer: number }[]>();
  table.params.forEach((p, i) => {
    for (const [a, what] of [[p, 'param'], [table.grads[i], 'grad']] as const) {
      const list = byBuffer.get(a.buffer) ?? [];
      list.push({ begin: a.byteOffset, end: a.byteOffset + a.byteLength, what, layer: i });
      byBuffer.set(a.buffer, list);
    }
  });
  for (const list of byBuffer.values()) {
    list.sort((x, y) => x.begin - y.begin);
    for (let k = 1; k < list.length; k++) {
      const [a, b] = [list[k - 1], list[k]];
      if (b.begin < a.end) {
        const detail =
          a.layer === b.layer
            ? `the grad of layer ${a.layer} overlaps its param`
            : `the ${a.what} of layer ${a.layer} and the ${b.what} of layer ${b.layer} share memory`;
        fail('ERR_KOALA_OVERLAP', `${detail}: every param and grad needs memory of its own`);
      }
    }
  }
}

/** Per call: a detached (or shrunk) buffer shows as a length other than the registered one. */
export function checkAttached(table: LayerTable): void {
  const { params, grads, lengths } = table;
  for (let i = 0; i < lengths.length; i++) {
    if (params[i].length !== lengths[i] || grads[i].length !== lengths[i]) {
      fail('ERR_KOALA_DETACHED', `layer ${i} (${table.names[i]}): its param or grad buffer was detached or resized since construction`);
    }
  }
}

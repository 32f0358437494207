import { types } from 'node:util';

import { fail } from './errors';

export type FloatArray = Float32Array | Float64Array;
export type DType = 'float32' | 'float64';

/** A new zeroed array of `n` elements of the dtype. */
export function zeros(dtype: DType, n: number): FloatArray {
  return dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

/**
 * A tensor in CUDA device memory that another library owns (DLPack-style): `ptr` is the address
 * of its first element, a BigInt (e.g. `BigInt(torchTensor.data_ptr())`), `length` its number of
 * elements, contiguous. The optimizer reads and writes it in place and never frees it.
 */
export interface DeviceTensor {
  device: 'cuda';
  deviceId: number;
  ptr: bigint;
  length: number;
  dtype: DType;
}

/** One float32 or float64 value in device memory: update() can read the loss from there. */
export type DeviceScalar = Omit<DeviceTensor, 'length'>;

/** One parameter tensor: its values and the buffer the trainer writes its gradient into. */
export interface Layer {
  param: FloatArray | DeviceTensor;
  grad: FloatArray | DeviceTensor;
  name?: string;
}

/** Where the layers live: host arrays (CPU backends) or device memory (the CUDA backend). */
export type LayerTable = HostLayerTable | DeviceLayerTable;

interface TableCommon {
  names: string[];
  lengths: number[];
  dtype: DType;
  total: number;
}

export interface HostLayerTable extends TableCommon {
  memory: 'host';
  params: FloatArray[];
  grads: FloatArray[];
}

export interface DeviceLayerTable extends TableCommon {
  memory: 'cuda';
  deviceId: number;
  params: bigint[];
  grads: bigint[];
}

export function dtypeOf(a: unknown): DType | null {
  if (types.isFloat32Array(a)) return 'float32';
  if (types.isFloat64Array(a)) return 'float64';
  return null;
}

export function isDeviceDescriptor(a: unknown): a is { device: unknown } {
  return typeof a === 'object' && a !== null && !ArrayBuffer.isView(a) && 'device' in a;
}

/** Checks a DeviceTensor (withLength) or DeviceScalar descriptor; `what` names it in errors. */
export function checkDeviceDescriptor(a: unknown, what: string, withLength: boolean): DeviceTensor {
  const d = a as Partial<DeviceTensor>;
  if (d.device !== 'cuda') fail('ERR_KOALA_INVALID_ARRAY', `${what}: device must be 'cuda', got ${String(d.device)}`);
  if (!Number.isSafeInteger(d.deviceId) || (d.deviceId as number) < 0) fail('ERR_KOALA_INVALID_ARRAY', `${what}: deviceId must be an integer >= 0`);
  if (typeof d.ptr !== 'bigint' || d.ptr <= 0n || d.ptr >= 2n ** 64n) {
    fail('ERR_KOALA_INVALID_DEVICE_POINTER', `${what}: ptr must be a non-zero 64-bit address as a BigInt, got ${String(d.ptr)}`);
  }
  if (d.dtype !== 'float32' && d.dtype !== 'float64') fail('ERR_KOALA_INVALID_ARRAY', `${what}: dtype must be 'float32' or 'float64', got ${String(d.dtype)}`);
  if (withLength && (!Number.isSafeInteger(d.length) || (d.length as number) < 0)) {
    fail('ERR_KOALA_INVALID_ARRAY', `${what}: length must be an integer >= 0`);
  }
  return d as DeviceTensor;
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

interface Checked {
  dtype: DType;
  length: number;
}

function checkHost(a: unknown, label: string, what: string): Checked {
  const dtype = dtypeOf(a);
  if (dtype === null) fail('ERR_KOALA_INVALID_ARRAY', `${label}: ${what} must be a Float32Array, a Float64Array or a device tensor`);
  if (isDetached(a as FloatArray)) fail('ERR_KOALA_DETACHED', `${label}: the buffer of its ${what} is detached`);
  return { dtype, length: (a as FloatArray).length };
}

/**
 * Checks the layer list once, at construction: every param and grad a Float32Array/Float64Array,
 * or every one a device tensor, never a mix. Memory shared between two of them is found by
 * ArrayBuffer identity and byte ranges on the host, by address ranges on the device (the native
 * backends check addresses as well). The slices of a sharded optimizer (allowEmpty) may be empty.
 */
export function validateLayers(layers: unknown, allowEmpty = false): LayerTable {
  if (!Array.isArray(layers) || layers.length === 0) {
    fail('ERR_KOALA_INVALID_LAYERS', 'layers must be a non-empty array of { param, grad, name? }');
  }
  const first = (layers[0] as { param?: unknown } | null)?.param;
  const onDevice = isDeviceDescriptor(first);
  const common: TableCommon = { names: [], lengths: [], dtype: 'float32', total: 0 };
  const host: HostLayerTable = { ...common, memory: 'host', params: [], grads: [] };
  const device: DeviceLayerTable = { ...common, memory: 'cuda', deviceId: 0, params: [], grads: [] };
  const table = onDevice ? device : host;
  layers.forEach((layer: unknown, i: number) => {
    if (typeof layer !== 'object' || layer === null) fail('ERR_KOALA_INVALID_LAYERS', `layer ${i} must be an object { param, grad, name? }`);
    const { param, grad, name } = layer as Record<string, unknown>;
    const label = typeof name === 'string' ? `layer ${i} (${name})` : `layer ${i}`;
    if (isDeviceDescriptor(param) !== onDevice || isDeviceDescriptor(grad) !== onDevice) {
      fail('ERR_KOALA_MIXED_MEMORY', `${label}: host arrays and device tensors are mixed; all params and grads of one optimizer live in one place (layer 0's param is ${onDevice ? 'a device tensor' : 'a host array'})`);
    }
    let p: Checked;
    let g: Checked;
    if (onDevice) {
      const pd = checkDeviceDescriptor(param, `${label} param`, true);
      const gd = checkDeviceDescriptor(grad, `${label} grad`, true);
      if (i === 0) device.deviceId = pd.deviceId;
      if (pd.deviceId !== device.deviceId || gd.deviceId !== device.deviceId) {
        fail('ERR_KOALA_INVALID_DEVICE_POINTER', `${label}: every tensor of one optimizer must be on one device (layer 0 is on cuda:${device.deviceId})`);
      }
      device.params.push(pd.ptr);
      device.grads.push(gd.ptr);
      [p, g] = [pd, gd];
    } else {
      p = checkHost(param, label, 'param');
      g = checkHost(grad, label, 'grad');
      host.params.push(param as FloatArray);
      host.grads.push(grad as FloatArray);
    }
    if (p.dtype !== g.dtype) fail('ERR_KOALA_DTYPE_MISMATCH', `${label}: param is ${p.dtype} but grad is ${g.dtype}`);
    if (i > 0 && p.dtype !== table.dtype) {
      fail('ERR_KOALA_DTYPE_MISMATCH', `${label} is ${p.dtype} but layer 0 is ${table.dtype}: one optimizer takes one dtype`);
    }
    if (p.length !== g.length) fail('ERR_KOALA_LENGTH_MISMATCH', `${label}: param has ${p.length} elements but grad has ${g.length}`);
    if (p.length === 0 && !allowEmpty) fail('ERR_KOALA_INVALID_LAYERS', `${label} is empty`);
    if (name !== undefined && typeof name !== 'string') fail('ERR_KOALA_INVALID_LAYERS', `${label}: name must be a string`);
    table.dtype = p.dtype;
    table.names.push(typeof name === 'string' ? name : `layer${i}`);
    table.lengths.push(p.length);
    table.total += p.length;
  });
  return table;
}

interface Span {
  begin: bigint;
  end: bigint;
  what: 'param' | 'grad';
  layer: number;
}

function failOnOverlap(all: Span[]): void {
  const spans = all.filter((s) => s.end > s.begin); // an empty slice holds no bytes
  spans.sort((x, y) => (x.begin < y.begin ? -1 : x.begin > y.begin ? 1 : 0));
  for (let k = 1; k < spans.length; k++) {
    const [a, b] = [spans[k - 1], spans[k]];
    if (b.begin < a.end) {
      const detail =
        a.layer === b.layer
          ? `the grad of layer ${a.layer} overlaps its param`
          : `the ${a.what} of layer ${a.layer} and the ${b.what} of layer ${b.layer} share memory`;
      fail('ERR_KOALA_OVERLAP', `${detail}: every param and grad needs memory of its own`);
    }
  }
}

/**
 * The js backend's aliasing check: spans that share bytes within one buffer. The native and CUDA
 * bindings check addresses instead (native/core/overlap.h), which also sees two buffer objects
 * over one memory (Note [checks in one place], koala.ts).
 */
export function checkHostOverlap(table: HostLayerTable): void {
  const byBuffer = new Map<ArrayBufferLike, Span[]>();
  table.params.forEach((p, i) => {
    for (const [a, what] of [[p, 'param'], [table.grads[i], 'grad']] as const) {
      const list = byBuffer.get(a.buffer) ?? [];
      list.push({ begin: BigInt(a.byteOffset), end: BigInt(a.byteOffset + a.byteLength), what, layer: i });
      byBuffer.set(a.buffer, list);
    }
  });
  for (const spans of byBuffer.values()) failOnOverlap(spans);
}

/** Per call: a detached (or shrunk) host buffer shows as a length other than the registered one. */
export function checkAttached(table: LayerTable): void {
  if (table.memory !== 'host') return;
  const { params, grads, lengths } = table;
  for (let i = 0; i < lengths.length; i++) {
    if (params[i].length !== lengths[i] || grads[i].length !== lengths[i]) {
      fail('ERR_KOALA_DETACHED', `layer ${i} (${table.names[i]}): its param or grad buffer was detached or resized since construction`);
    }
  }
}

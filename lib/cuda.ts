/**
 * The CUDA backend's loader and the `cuda` namespace. The CUDA addon (koala_optim_cuda.node, built
 * by cmake-js when a CUDA compiler is present) is a module of its own, loaded here on first use
 * only, so that a machine without CUDA never loads it. KOALA_OPTIM_CUDA_ADDON=path picks the file.
 */
import { resolve } from 'node:path';

import type { Backend } from './backend';
import { fail, nativeCall as call } from './errors';
import { checkDeviceDescriptor, dtypeOf, zeros, type DeviceLayerTable, type DeviceScalar, type DeviceTensor, type DType, type FloatArray } from './layers';
import { addonPaths, loadAddon, type LoadedAddon } from './native';
import type { BackendConfig } from './options';
import { DTYPE, type BackendStep, type FilterSnapshot, type LayerStateKind, type PredictMoved, type ProtocolConstants } from './protocol';

type NativeScalar = number | [bigint, number];

interface NativeCudaOptimizer {
  predict(): PredictMoved;
  update(loss: NativeScalar, lossSq: NativeScalar, lr: number): void;
  predictPartial(): PredictMoved;
  predictFinish(): void;
  updatePartial(): void;
  updateFinish(loss: NativeScalar, lossSq: NativeScalar, lr: number): void;
  deviceSums(): [bigint, bigint];
  lastStep(): BackendStep;
  getFilter(): FilterSnapshot;
  setFilter(s: FilterSnapshot): void;
  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void;
  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void;
  readLayerScalars(out: Float64Array): void;
  writeLayerScalars(values: Float64Array): void;
  dispose(): void;
}

interface CudaModule {
  NativeCudaOptimizer: new (
    config: BackendConfig & { deviceId: number; stream: bigint },
    params: bigint[],
    grads: bigint[],
    lengths: number[],
    skipMask: Uint8Array,
  ) => NativeCudaOptimizer;
  protocol: ProtocolConstants;
  probe(): { devices: number; error: string };
  malloc(bytes: number, deviceId: number): bigint;
  free(ptr: bigint, deviceId: number): void;
  copyToDevice(ptr: bigint, data: FloatArray, deviceId: number, stream?: bigint): void;
  copyToHost(out: FloatArray, ptr: bigint, deviceId: number, stream?: bigint): void;
  synchronize(deviceId: number): void;
}


let loaded: LoadedAddon<CudaModule> | null = null;

function load(): LoadedAddon<CudaModule> {
  const paths = process.env.KOALA_OPTIM_CUDA_ADDON ? [resolve(process.env.KOALA_OPTIM_CUDA_ADDON)] : addonPaths('koala_optim_cuda');
  loaded ??= loadAddon<CudaModule>(paths, `no CUDA addon at ${paths.join(' or ')}: it ships prebuilt for linux-x64 and is built from source only where cmake-js finds a CUDA compiler (nvcc)`);
  return loaded;
}

export interface CudaStatus {
  /** True when the CUDA addon loads and sees at least one device. */
  available: boolean;
  /** Visible CUDA devices (0 when not available). */
  devices: number;
  /** Why not, when not available (empty when it is). */
  reason: string;
  /** The CUDA addon file, when it loads. */
  path: string | null;
}

function status(): CudaStatus {
  const l = load();
  if (!l.module) return { available: false, devices: 0, reason: l.reason, path: null };
  const p = l.module.probe();
  return { available: p.devices > 0, devices: p.devices, reason: p.error, path: l.path };
}

function usable(): CudaModule {
  const s = status();
  if (!s.available) fail('ERR_KOALA_CUDA_UNAVAILABLE', `CUDA is not available: ${s.reason}`);
  return load().module!;
}

function nativeScalar(x: number | DeviceScalar): NativeScalar {
  return typeof x === 'number' ? x : [x.ptr, DTYPE[x.dtype]];
}

/** The Backend over device memory: a step is launched on the stream and read back only when asked. */
export class CudaBackend implements Backend {
  readonly deferred = true;
  private readonly native: NativeCudaOptimizer;

  constructor(config: BackendConfig, table: DeviceLayerTable, skipMask: Uint8Array, stream: bigint) {
    const mod = usable();
    this.native = call(
      () => new mod.NativeCudaOptimizer({ ...config, deviceId: table.deviceId, stream }, table.params, table.grads, table.lengths, skipMask),
    );
  }

  predict(): PredictMoved {
    return this.native.predict();
  }

  update(loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): void {
    this.native.update(nativeScalar(loss), nativeScalar(lossSq), lr);
  }

  // The halves of a sharded step keep their sums in device memory (Note [sharded device step],
  // native/cuda/optimizer.h): the caller reduces them on the stream, e.g. with NCCL.
  predictPartial(): PredictMoved {
    return this.native.predictPartial();
  }

  predictFinish(): void {
    this.native.predictFinish();
  }

  updatePartial(): void {
    this.native.updatePartial();
  }

  updateFinish(_sums: Float64Array | null, loss: number | DeviceScalar, lossSq: number | DeviceScalar, lr: number): void {
    this.native.updateFinish(nativeScalar(loss), nativeScalar(lossSq), lr);
  }

  deviceSums(): [bigint, bigint] {
    return this.native.deviceSums();
  }

  lastStep(): BackendStep {
    return this.native.lastStep();
  }

  getFilter(): FilterSnapshot {
    return this.native.getFilter();
  }

  setFilter(s: FilterSnapshot): void {
    this.native.setFilter(s);
  }

  readLayerState(kind: LayerStateKind, layer: number, out: FloatArray): void {
    this.native.readLayerState(kind, layer, out);
  }

  writeLayerState(kind: LayerStateKind, layer: number, values: FloatArray): void {
    this.native.writeLayerState(kind, layer, values);
  }

  readLayerScalars(out: Float64Array): void {
    this.native.readLayerScalars(out);
  }

  writeLayerScalars(values: Float64Array): void {
    this.native.writeLayerScalars(values);
  }

  threadsInUse(): number {
    return 0;
  }

  dispose(): void {
    this.native.dispose();
  }
}

function checkStream(stream: unknown): void {
  if (typeof stream !== 'bigint' || stream < 0n) fail('ERR_KOALA_INVALID_ARGUMENT', 'a stream is a cudaStream_t as a BigInt (0n: the legacy default stream)');
}

function elementBytes(dtype: DType): number {
  return dtype === 'float32' ? 4 : 8;
}

/**
 * CUDA from Node without another library: whether a device is usable, and plain device memory for
 * tests, benchmarks and trainers that hold their tensors in no other CUDA library.
 */
export const cuda = {
  /** Whether the CUDA backend can run here and, if not, why (never throws). */
  available(): CudaStatus {
    return status();
  },

  /** cudaMalloc of `length` elements of `dtype` on device `deviceId`; free it with cuda.free(). */
  alloc(length: number, dtype: DType = 'float32', deviceId = 0): DeviceTensor {
    const mod = usable();
    if (!Number.isSafeInteger(length) || length <= 0) fail('ERR_KOALA_INVALID_ARGUMENT', `length must be a positive integer, got ${length}`);
    if (dtype !== 'float32' && dtype !== 'float64') fail('ERR_KOALA_INVALID_ARGUMENT', `dtype must be 'float32' or 'float64'`);
    const ptr = call(() => mod.malloc(length * elementBytes(dtype), deviceId));
    return { device: 'cuda', deviceId, ptr, length, dtype };
  },

  free(t: DeviceTensor): void {
    const d = checkDeviceDescriptor(t, 'tensor', true);
    call(() => usable().free(d.ptr, d.deviceId));
  },

  /**
   * Copies a host array of the tensor's dtype and length into it, and waits for the copy. The copy
   * runs on `stream` (a cudaStream_t as a BigInt; default 0n, the legacy default stream), after the
   * work queued there: pass the optimizer's stream when it is a non-blocking one, which the legacy
   * default stream does not wait for.
   */
  upload(t: DeviceTensor, data: FloatArray, stream: bigint = 0n): void {
    const d = checkDeviceDescriptor(t, 'tensor', true);
    if (dtypeOf(data) !== d.dtype || data.length !== d.length) {
      fail('ERR_KOALA_INVALID_ARGUMENT', `upload: the host array must be ${d.dtype} of length ${d.length}`);
    }
    checkStream(stream);
    call(() => usable().copyToDevice(d.ptr, data, d.deviceId, stream));
  },

  /** Copies the tensor into a new host array, on `stream` after its queued work (as upload()), and waits for the copy. */
  download(t: DeviceTensor, stream: bigint = 0n): FloatArray {
    const d = checkDeviceDescriptor(t, 'tensor', true);
    checkStream(stream);
    const out = zeros(d.dtype, d.length);
    call(() => usable().copyToHost(out, d.ptr, d.deviceId, stream));
    return out;
  },

  /** Waits for all work on the device (cudaDeviceSynchronize). */
  synchronize(deviceId = 0): void {
    call(() => usable().synchronize(deviceId));
  },
};

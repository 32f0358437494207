/**
 * Sharded optimizers (Note [sharded step], native/cpu/optimizer.h): where a rank's slices lie, and
 * the cutting of whole layers into one rank's slices.
 */
import { fail } from './errors';
import { isDeviceDescriptor, type DeviceTensor, type FloatArray, type Layer, type LayerTable } from './layers';
import type { ShardSpec } from './options';

/**
 * Checks the option shard against the validated slices (one entry per layer, integers, each slice
 * inside its layer, no empty layer) and returns a copy of it with the model's element count.
 */
export function checkShard(spec: unknown, table: LayerTable): { shard: ShardSpec; modelElems: number } {
  const bad = (why: string): never => fail('ERR_KOALA_INVALID_OPTION', `option shard: ${why}`);
  if (typeof spec !== 'object' || spec === null) bad('must be { layerLengths: number[], offsets: number[] }');
  const { layerLengths, offsets } = spec as Partial<ShardSpec>;
  const count = table.lengths.length;
  if (!Array.isArray(layerLengths) || layerLengths.length !== count) bad(`layerLengths must hold one length per layer (${count})`);
  if (!Array.isArray(offsets) || offsets.length !== count) bad(`offsets must hold one offset per layer (${count})`);
  // Copied by index first, then checked: each element is read once (as every option is).
  const shard: ShardSpec = {
    layerLengths: Array.from({ length: count }, (_, l) => layerLengths![l]),
    offsets: Array.from({ length: count }, (_, l) => offsets![l]),
  };
  let modelElems = 0;
  for (let l = 0; l < count; l++) {
    const [n, off, len] = [shard.layerLengths[l], shard.offsets[l], table.lengths[l]];
    if (!Number.isSafeInteger(n) || n < 1) bad(`layerLengths[${l}] must be an integer >= 1 (a layer is never empty; its slice may be)`);
    if (!Number.isSafeInteger(off) || off < 0 || off + len > n) {
      bad(`layer ${l}: the slice [${String(off)}, ${String(off)} + ${len}) does not lie inside the layer's ${n} elements`);
    }
    modelElems += n;
  }
  return { shard, modelElems };
}

/** The flat range [begin, end) of rank `rank` of `ranks` over `total` elements, cut as evenly as integers allow. */
export function shardRange(total: number, rank: number, ranks: number): [number, number] {
  if (!Number.isSafeInteger(ranks) || ranks < 1) fail('ERR_KOALA_INVALID_ARGUMENT', `ranks must be an integer >= 1, got ${ranks}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= ranks) fail('ERR_KOALA_INVALID_ARGUMENT', `rank must be an integer in [0, ${ranks}), got ${rank}`);
  if (!Number.isSafeInteger(total) || total < 0) fail('ERR_KOALA_INVALID_ARGUMENT', `total must be an integer >= 0, got ${total}`);
  return [Math.floor((total * rank) / ranks), Math.floor((total * (rank + 1)) / ranks)];
}

function slice<T extends FloatArray | DeviceTensor>(t: T, begin: number, end: number): T {
  if (!isDeviceDescriptor(t)) return (t as FloatArray).subarray(begin, end) as T;
  const d = t as DeviceTensor;
  const bytes = d.dtype === 'float32' ? 4 : 8;
  return { ...d, ptr: d.ptr + BigInt(begin * bytes), length: end - begin } as T;
}

/**
 * This rank's slices of whole layers: the flat range [begin, end) of the layers' concatenation (in
 * order), cut at any point. Every layer gets a slice, empty where the range misses it. Host arrays
 * are cut with subarray() (views, no copies), device tensors by address.
 */
export function shardLayers(layers: readonly Layer[], begin: number, end: number): { layers: Layer[]; shard: ShardSpec } {
  if (!Array.isArray(layers) || layers.length === 0) fail('ERR_KOALA_INVALID_LAYERS', 'layers must be a non-empty array of { param, grad, name? }');
  const lengths = layers.map((l, i) => {
    const n = (l?.param as { length?: unknown } | undefined)?.length;
    if (!Number.isSafeInteger(n) || (n as number) < 1) fail('ERR_KOALA_INVALID_LAYERS', `layer ${i}: param must be a non-empty array or device tensor`);
    return n as number;
  });
  const total = lengths.reduce((a, b) => a + b, 0);
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > total) {
    fail('ERR_KOALA_INVALID_ARGUMENT', `the range [${begin}, ${end}) must lie inside the layers' ${total} elements`);
  }
  const out: Layer[] = [];
  const offsets: number[] = [];
  let start = 0; // where the current layer starts in the flat order
  layers.forEach((layer, l) => {
    const from = Math.min(Math.max(begin - start, 0), lengths[l]);
    const to = Math.max(Math.min(end - start, lengths[l]), from);
    out.push({ param: slice(layer.param, from, to), grad: slice(layer.grad, from, to), ...(layer.name === undefined ? {} : { name: layer.name }) });
    offsets.push(from);
    start += lengths[l];
  });
  return { layers: out, shard: { layerLengths: lengths, offsets } };
}

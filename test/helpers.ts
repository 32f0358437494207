import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { KoalaError, type FloatArray, type KoalaMOptions, type KoalaPPOptions, type KoalaVOptions } from '../lib';

/**
 * The recorded runs of the official code: test/fixtures/golden (test/fixtures/README.md says where
 * they come from), or KOALA_GOLDEN_DIR (the GPU check, bench/gpu/, sets it).
 */
export const GOLDEN_DIR = process.env.KOALA_GOLDEN_DIR ?? join(__dirname, 'fixtures', 'golden');

/** The recorded runs of the authors' KOALA++ code (test/fixtures/README.md), or KOALA_GOLDEN_PP_DIR. */
export const GOLDEN_PP_DIR = process.env.KOALA_GOLDEN_PP_DIR ?? join(__dirname, 'fixtures', 'golden-koala-pp');

export interface GoldenPPStep {
  lr: number;
  grads: number[][];
  loss: number;
  lossSq: number;
  /** Per layer vk and Hk (flat) and Sk, null while the layer has never been updated. */
  afterUpdate: { params: number[][]; vk: (number[] | null)[]; Hk: (number[] | null)[]; Sk: (number | null)[]; R: number };
}

export interface GoldenPP {
  file: string;
  optimizer: 'koala++';
  options: Record<string, number | boolean | null>;
  dtype: 'float32' | 'float64';
  layers: { name: string; shape: number[] }[];
  initial: { params: number[][] };
  steps: GoldenPPStep[];
}

export function goldenPPFiles(): string[] {
  return readdirSync(GOLDEN_PP_DIR).filter((f) => f.endsWith('.json')).sort();
}

export function loadGoldenPP(file: string): GoldenPP {
  return { file, ...JSON.parse(readFileSync(join(GOLDEN_PP_DIR, file), 'utf8')) };
}

/** The KOALA++ reference's constructor options under this package's names (README, option table). */
export function optionsOfPP(g: GoldenPP): KoalaPPOptions {
  const names: Record<string, string> = { sigma: 'sigma0', q: 'q', r: 'r', alpha_r: 'betaR', weight_decay: 'weightDecay', lr: 'lr', is_symmetric: 'symmetric' };
  const out: Record<string, number | boolean | null> = {};
  for (const [k, v] of Object.entries(g.options)) {
    if (!(k in names)) throw new Error(`golden option ${k} has no mapping`);
    out[names[k]] = v;
  }
  return out as KoalaPPOptions;
}

export interface GoldenStep {
  lr: number;
  afterPredict: { params?: number[][]; velocities?: number[][]; P?: number[][]; Qx?: number; sigma?: number };
  grads: number[][];
  loss: number;
  lossSq: number;
  afterUpdate: { params: number[][]; velocities?: number[][]; paramAvg?: number[][]; P?: number[][]; R: number; sigma?: number };
}

export interface Golden {
  file: string;
  optimizer: 'koala-m' | 'koala-v';
  options: Record<string, number | null>;
  dtype: 'float32' | 'float64';
  layers: { name: string; shape: number[] }[];
  initial: { params: number[][] };
  steps: GoldenStep[];
}

export function goldenFiles(): string[] {
  return readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.json')).sort();
}

export function loadGolden(file: string): Golden {
  return { file, ...JSON.parse(readFileSync(join(GOLDEN_DIR, file), 'utf8')) };
}

/** The reference's constructor options under this package's names (README, option table). */
export function optionsOf(g: Golden): KoalaMOptions & KoalaVOptions {
  const names: Record<string, string> = g.optimizer === 'koala-m'
    ? { weight_decay: 'weightDecay', a: 'kappa', sw: 'sigmaX0', sc: 'sigmaC0', sv: 'sigmaP0', qw: 'qX0', qv: 'qP', r: 'r', alpha_r: 'betaR', lr: 'lr' }
    : { weight_decay: 'weightDecay', sigma: 'sigma0', q: 'q', r: 'r', alpha_r: 'betaR', lr: 'lr' };
  const out: Record<string, number | null> = {};
  for (const [k, v] of Object.entries(g.options)) {
    if (!(k in names)) throw new Error(`golden option ${k} has no mapping`);
    out[names[k]] = v;
  }
  return out;
}

/** |a - b| / |b| over all layers together (the golden README's measure). */
export function relNorm(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let num = 0;
  let den = 0;
  a.forEach((al, l) => {
    for (let i = 0; i < al.length; i++) {
      num += (al[i] - b[l][i]) ** 2;
      den += b[l][i] ** 2;
    }
  });
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Largest |a_i - b_i| / max_i |b_i|, for the small P matrices and scalars. */
export function relMax(a: number[], b: number[]): number {
  const scale = Math.max(...b.map(Math.abs)) || 1;
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]))) / scale;
}

export function flatP(P: number[][]): number[] {
  return [P[0][0], P[0][1], P[1][1]];
}

// Globals are slow to reach inside jest's vm context: hold Math.imul in a local binding.
const imul = Math.imul;

/** mulberry32: a small seeded generator, so every table case is reproducible. */
export function rng(seed: number): () => number {
  const state = new Uint32Array([seed]);
  return () => {
    const s = (state[0] = (state[0] + 0x6d2b79f5) | 0);
    let t = imul(s ^ (s >>> 15), s | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function snapshot(arrays: FloatArray[]): FloatArray[] {
  return arrays.map((a) => a.slice());
}

export function bitwiseEqual(a: FloatArray[], b: FloatArray[]): boolean {
  return a.length === b.length && a.every((x, l) => Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b[l].buffer, b[l].byteOffset, b[l].byteLength)));
}

/** A Float32Array or Float64Array of n elements with a[i] = f(i). */
export function makeArray(dtype: 'float32' | 'float64', n: number, f: (i: number) => number): FloatArray {
  const a = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return a;
}

/** The code of the KoalaError that fn throws (failing the test if it throws anything else), or undefined. */
export function errorCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KoalaError);
    return (e as KoalaError).code;
  }
  return undefined;
}

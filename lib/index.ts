export { KoalaM, KoalaV } from './koala';
export type { KoalaMState, KoalaStateDict, KoalaVState, Phase, SkipReason, UpdateInfo } from './koala';
export { KoalaError } from './errors';
export type { KoalaErrorCode } from './errors';
export type { DType, FloatArray, Layer } from './layers';
export type { BackendChoice, KoalaMOptions, KoalaVOptions, NonFinitePolicy } from './options';
export { nativeStatus } from './native';
export type { NativeStatus } from './native';

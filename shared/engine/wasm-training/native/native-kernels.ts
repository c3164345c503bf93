/**
 * Native (C compiled to WebAssembly SIMD128) kernels that work in place on the tfjs wasm
 * backend's heap. The module (kernels.c, embedded by build.sh in kernels-wasm.ts) imports the
 * backend's own WebAssembly.Memory, so tensors are passed as byte offsets into that heap and
 * nothing is copied. It never writes outside the output it is given: it has no data segment and
 * no shadow stack (checked by build.sh and by test/wasm-native-kernels.test.ts).
 *
 * One instance per backend memory, created synchronously on first use (the module is ~4 KiB).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { Wasm, type WasmMemory } from '../../../wasm/webassembly.js';
import { KERNELS_WASM_BASE64 } from './kernels-wasm.js';

/** batch, inH, inW, channels, outH, outW, filterH, filterW, strideH, strideW, dilationH, dilationW, padTop, padLeft */
type ConvArgs = [number, number, number, number, number, number, number, number, number, number, number, number, number, number];

interface KernelExports {
  maxpool_grad(
    x: number,
    dy: number,
    dx: number,
    batch: number,
    inH: number,
    inW: number,
    channels: number,
    outH: number,
    outW: number,
    filterH: number,
    filterW: number,
    strideH: number,
    strideW: number,
    padTop: number,
    padLeft: number,
  ): void;
  sum_leading(x: number, out: number, rows: number, cols: number): void;
  col2im(cols: number, dx: number, ...geometry: ConvArgs): void;
  im2col(x: number, out: number, transposed: number, ...geometry: ConvArgs): void;
}

/** The module's bytes (decoded once). */
export function nativeKernelBytes(): Uint8Array {
  moduleBytes ??= new Uint8Array(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
  return moduleBytes;
}

let moduleBytes: Uint8Array | undefined;
let compiled: object | undefined;
const instances = new WeakMap<WasmMemory, KernelExports>();

/** The backend's heap as a WebAssembly.Memory (Emscripten keeps it on the module's `asm`). */
function backendMemory(backend: BackendWasm): WasmMemory {
  const wasm = backend.wasm as unknown as { asm?: { memory?: unknown }; wasmMemory?: unknown };
  const memory = wasm.asm?.memory ?? wasm.wasmMemory;
  if (!(memory instanceof Wasm.Memory)) {
    throw new Error('native wasm kernels: the wasm backend does not expose its WebAssembly.Memory');
  }
  if (typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer) {
    throw new Error('native wasm kernels: the multi-threaded wasm backend (shared memory) is not supported');
  }
  return memory;
}

function kernels(backend: BackendWasm): KernelExports {
  const memory = backendMemory(backend);
  let exports = instances.get(memory);
  if (exports == null) {
    compiled ??= new Wasm.Module(nativeKernelBytes());
    exports = new Wasm.Instance(compiled, { env: { memory } }).exports as unknown as KernelExports;
    instances.set(memory, exports);
  }
  return exports;
}

/** Byte offset of a tensor's data in the backend's heap. */
export function heapOffset(backend: BackendWasm, t: TensorInfo): number {
  const data = backend.dataIdMap.get(t.dataId);
  if (data == null) throw new Error('native wasm kernels: tensor is not on the wasm backend');
  return data.memoryOffset;
}

export interface MaxPoolGradGeometry {
  batch: number;
  inHeight: number;
  inWidth: number;
  channels: number;
  outHeight: number;
  outWidth: number;
  filterHeight: number;
  filterWidth: number;
  strideHeight: number;
  strideWidth: number;
  padTop: number;
  padLeft: number;
}

/**
 * dx = gradient of max pooling (NHWC float32): each window's dy goes to its first maximum in x.
 * `x`, `dy` and `dx` must be float32 tensors of the shapes `geometry` describes; `dx` is
 * entirely overwritten.
 */
export function nativeMaxPoolGrad(backend: BackendWasm, x: TensorInfo, dy: TensorInfo, dx: TensorInfo, g: MaxPoolGradGeometry): void {
  const xSize = g.batch * g.inHeight * g.inWidth * g.channels;
  const dySize = g.batch * g.outHeight * g.outWidth * g.channels;
  checkSize(x, xSize, 'x');
  checkSize(dx, xSize, 'dx');
  checkSize(dy, dySize, 'dy');
  if (xSize === 0 || dySize === 0) {
    if (xSize > 0) backend.typedArrayFromHeap(dx).fill(0);
    return;
  }
  kernels(backend).maxpool_grad(
    heapOffset(backend, x),
    heapOffset(backend, dy),
    heapOffset(backend, dx),
    g.batch,
    g.inHeight,
    g.inWidth,
    g.channels,
    g.outHeight,
    g.outWidth,
    g.filterHeight,
    g.filterWidth,
    g.strideHeight,
    g.strideWidth,
    g.padTop,
    g.padLeft,
  );
}

/** out[c] = sum over r of x[r * cols + c], for x a float32 [rows, cols] matrix and out [cols]. */
export function nativeSumLeading(backend: BackendWasm, x: TensorInfo, out: TensorInfo, rows: number, cols: number): void {
  checkSize(x, rows * cols, 'x');
  checkSize(out, cols, 'out');
  if (cols === 0) return;
  if (rows === 0) {
    backend.typedArrayFromHeap(out).fill(0);
    return;
  }
  kernels(backend).sum_leading(heapOffset(backend, x), heapOffset(backend, out), rows, cols);
}

/** Geometry of a forward convolution (NHWC), for im2col and col2im. */
export interface ConvGeometry extends MaxPoolGradGeometry {
  dilationHeight: number;
  dilationWidth: number;
}

/**
 * dx[n, h, w, c] = sum of cols[n, oh, ow, kh, kw, c] over the (oh, ow, kh, kw) whose window
 * position is (h, w): the input gradient of a convolution from cols = dy x filter^T. `dx` is
 * entirely overwritten.
 */
export function nativeCol2Im(backend: BackendWasm, cols: TensorInfo, dx: TensorInfo, g: ConvGeometry): void {
  const dxSize = g.batch * g.inHeight * g.inWidth * g.channels;
  checkSize(cols, patchesSize(g), 'cols');
  checkSize(dx, dxSize, 'dx');
  if (dxSize === 0) return;
  kernels(backend).col2im(heapOffset(backend, cols), heapOffset(backend, dx), ...convArgs(g));
}

/**
 * The input patches of a convolution: [P, fh*fw*C] (P = batch*outH*outW positions, value
 * (kh, kw, c) last), or its transpose [fh*fw*C, P] when `transposed`; zeros in the padding.
 */
export function nativeIm2Col(backend: BackendWasm, x: TensorInfo, out: TensorInfo, transposed: boolean, g: ConvGeometry): void {
  checkSize(x, g.batch * g.inHeight * g.inWidth * g.channels, 'x');
  checkSize(out, patchesSize(g), 'out');
  if (patchesSize(g) === 0) return;
  kernels(backend).im2col(heapOffset(backend, x), heapOffset(backend, out), transposed ? 1 : 0, ...convArgs(g));
}

function patchesSize(g: ConvGeometry): number {
  return g.batch * g.outHeight * g.outWidth * g.filterHeight * g.filterWidth * g.channels;
}

function convArgs(g: ConvGeometry): ConvArgs {
  return [
    g.batch,
    g.inHeight,
    g.inWidth,
    g.channels,
    g.outHeight,
    g.outWidth,
    g.filterHeight,
    g.filterWidth,
    g.strideHeight,
    g.strideWidth,
    g.dilationHeight,
    g.dilationWidth,
    g.padTop,
    g.padLeft,
  ];
}

function checkSize(t: TensorInfo, size: number, name: string): void {
  if (t.dtype !== 'float32') throw new Error(`native wasm kernels: ${name} must be float32, got ${t.dtype}`);
  const actual = t.shape.reduce((a, b) => a * b, 1);
  if (actual !== size) throw new Error(`native wasm kernels: ${name} has ${actual} elements, expected ${size}`);
}

/**
 * The few pieces of the WebAssembly JS API that Cohort's own kernels use, typed here because
 * the project compiles against lib ES2022 without DOM types: compiling a module, instantiating
 * it against a memory, and growing that memory.
 */

export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  /** Grows by `pages` pages of 64 KiB; throws a RangeError past the maximum. */
  grow(pages: number): number;
}

export interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
  Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
}

export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Bytes in one WebAssembly memory page. */
export const WASM_PAGE_BYTES = 65_536;

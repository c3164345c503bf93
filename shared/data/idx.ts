/**
 * IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic (0, 0, type, number of
 * dimensions), the dimensions as big-endian int32, then the values. Only unsigned bytes (type
 * 0x08) are supported; files may be gzip-compressed (detected by content, not by name).
 * Writes are atomic (shared/io/atomic-write.ts).
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { CohortError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-write.js';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

const UNSIGNED_BYTE = 0x08;

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

export function parseIdx(buffer: Uint8Array, source: string): IdxArray {
  let bytes = buffer;
  if (isGzip(bytes)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (error) {
      throw new CohortError(`${source}: corrupt gzip data (${(error as Error).message})`, { code: 'DATA_INVALID', cause: error });
    }
  }
  if (bytes.length < 4) throw new CohortError(`${source}: not an IDX file (only ${bytes.length} bytes)`, { code: 'DATA_INVALID' });
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new CohortError(`${source}: not an IDX file (the magic number must start with two zero bytes)`, { code: 'DATA_INVALID' });
  }
  if (bytes[2] !== UNSIGNED_BYTE) {
    throw new CohortError(`${source}: IDX value type 0x${bytes[2].toString(16).padStart(2, '0')} is not supported (only unsigned bytes, 0x08)`, { code: 'DATA_INVALID' });
  }
  const rank = bytes[3];
  const headerLength = 4 + 4 * rank;
  if (rank === 0 || bytes.length < headerLength) {
    throw new CohortError(`${source}: truncated IDX header (${rank} dimensions need ${headerLength} bytes, found ${bytes.length})`, { code: 'DATA_INVALID' });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const expected = dims.reduce((a, b) => a * b, 1);
  const found = bytes.length - headerLength;
  if (found !== expected) {
    throw new CohortError(`${source}: expected ${expected} bytes of values after the header (dims ${dims.join('x')}), found ${found}`, { code: 'DATA_INVALID' });
  }
  // A plain Uint8Array view (not a Buffer, whatever was read), sharing the memory.
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + headerLength, found) };
}

export async function readIdxFile(path: string): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CohortError(code === 'ENOENT' ? `IDX file not found: ${path}` : `cannot read ${path}: ${(error as Error).message}`, { code: 'DATASET_UNAVAILABLE', cause: error });
  }
  return parseIdx(bytes, path);
}

export function encodeIdx({ dims, data }: IdxArray): Uint8Array {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (data.length !== expected) throw new Error(`encodeIdx: ${data.length} values for dims ${dims.join('x')}`);
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  out[2] = UNSIGNED_BYTE;
  out[3] = dims.length;
  const view = new DataView(out.buffer);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

export function writeIdxFile(path: string, array: IdxArray, options: { gzip?: boolean } = {}): void {
  const encoded = encodeIdx(array);
  writeFileAtomic(path, options.gzip ? gzipSync(encoded) : encoded);
}

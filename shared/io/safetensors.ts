/**
 * Reads safetensors files (the format the model hubs publish, and what a PyTorch state dict is
 * converted to): an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype, shape and byte range, then the raw little-endian data. No npm library for it is
 * maintained (the `safetensors` package is a 0.0.1 placeholder), and the format is this small.
 * Floating-point tensors come back as float32; integer ones (batch-norm's num_batches_tracked)
 * as numbers.
 */
import { readFileSync } from 'node:fs';
import { CohortError } from '../errors.js';

export interface SafeTensor {
  dtype: string;
  shape: number[];
  /** The values as float32 (integers are converted too; int64 beyond 2^24 lose precision). */
  data: Float32Array;
}

const BYTES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** IEEE half precision to float. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

function decode(dtype: string, bytes: Buffer, count: number): Float32Array {
  // float32 on a little-endian host: one copy (also aligns the data).
  if (dtype === 'F32' && LITTLE_ENDIAN) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < count; i++) {
    switch (dtype) {
      case 'F32':
        out[i] = view.getFloat32(4 * i, true);
        break;
      case 'F64':
        out[i] = view.getFloat64(8 * i, true);
        break;
      case 'F16':
        out[i] = halfToFloat(view.getUint16(2 * i, true));
        break;
      case 'BF16':
        out[i] = new Float32Array(new Uint32Array([view.getUint16(2 * i, true) << 16]).buffer)[0];
        break;
      case 'I64':
        out[i] = Number(view.getBigInt64(8 * i, true));
        break;
      case 'I32':
        out[i] = view.getInt32(4 * i, true);
        break;
      case 'I16':
        out[i] = view.getInt16(2 * i, true);
        break;
      case 'I8':
        out[i] = view.getInt8(i);
        break;
      default:
        out[i] = view.getUint8(i); // U8, BOOL
    }
  }
  return out;
}

/** Parses a safetensors file held in memory; `what` names it in errors. */
export function parseSafetensors(buffer: Buffer, what: string): Map<string, SafeTensor> {
  const fail = (message: string): never => {
    throw new CohortError(`${what}: not a valid safetensors file: ${message}`, { code: 'WEIGHTS_MISMATCH' });
  };
  if (buffer.length < 8) fail(`${buffer.length} bytes, shorter than the 8-byte header length`);
  const headerLength = Number(buffer.readBigUInt64LE(0));
  if (headerLength > buffer.length - 8) fail(`header length ${headerLength} runs past the end of the file (${buffer.length} bytes)`);
  let header: Record<string, { dtype?: unknown; shape?: unknown; data_offsets?: unknown }>;
  try {
    header = JSON.parse(buffer.subarray(8, 8 + headerLength).toString('utf8'));
  } catch (error) {
    return fail(`header is not JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, SafeTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry ?? {};
    if (typeof dtype !== 'string' || !(dtype in BYTES)) fail(`tensor '${name}' has unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`tensor '${name}' has no valid shape`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) fail(`tensor '${name}' has no valid data_offsets`);
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    const size = BYTES[dtype as string];
    if (end - begin !== count * size) fail(`tensor '${name}': ${end - begin} bytes for shape [${shape}] of ${dtype}`);
    if (dataStart + end > buffer.length) fail(`tensor '${name}' runs past the end of the file`);
    const bytes = buffer.subarray(dataStart + begin, dataStart + end);
    tensors.set(name, { dtype: dtype as string, shape: shape as number[], data: decode(dtype as string, bytes, count) });
  }
  return tensors;
}

/** Reads and parses a safetensors file; a missing or unreadable file is a CohortError naming it. */
export function readSafetensors(path: string): Map<string, SafeTensor> {
  let buffer: Buffer;
  try {
    buffer = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CohortError(code === 'ENOENT' ? `weights file not found: ${path}` : `cannot read weights file ${path}: ${(error as Error).message}`, {
      code: 'FILE_UNREADABLE',
      cause: error,
    });
  }
  return parseSafetensors(buffer, path);
}

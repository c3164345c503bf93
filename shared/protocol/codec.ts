/**
 * Messages ⇄ ZeroMQ multipart frames. Frame 0 is the msgpack header
 * `{v, type, ...fields, tensors: [{key, dtype, shape, byteLength}]}`; each tensor's data follows as
 * one raw frame (little-endian, as in memory), in `tensors` order. Encoding wraps the typed
 * arrays' memory without copying (keep them unchanged until the send resolves), except with
 * `float16`, which halves float32 tensors. Decoding never throws: anything malformed or over the
 * limits comes back as `{ok: false, error}` naming the problem.
 */
import { Packr, Unpackr } from 'msgpackr';
import { CohortError } from '../errors.js';
import { float16ToFloat32, float32ToFloat16 } from './float16.js';
import { DTYPES, isMessageType, isTensorFrame, messageSchemas, PROTOCOL_VERSION, type Dtype, type Message, type TensorFrame } from './messages.js';

export interface EncodeOptions {
  /** Send float32 tensors as IEEE half precision (half the bytes; about 3 significant digits). */
  float16?: boolean;
}

export interface DecodeLimits {
  /** All frames together; default 256 MiB. */
  maxMessageBytes: number;
  /** Elements of any one tensor; default 2^26 (256 MiB of float32). */
  maxTensorElements: number;
}

export const DEFAULT_LIMITS: DecodeLimits = { maxMessageBytes: 256 * 2 ** 20, maxTensorElements: 2 ** 26 };

/** Why a message was dropped: another protocol version (the sender can be told), or anything else malformed. */
export type DecodeFailure = 'PROTOCOL_VERSION' | 'MALFORMED_MESSAGE';
export type DecodeResult = { ok: true; message: Message } | { ok: false; error: string; code: DecodeFailure };

interface TensorHeader {
  key: string;
  dtype: Dtype;
  shape: number[];
  byteLength: number;
}

const BYTES: Record<Dtype, number> = { float32: 4, float16: 2, int32: 4, uint32: 4 };
const ARRAYS = { float32: Float32Array, float16: Uint16Array, int32: Int32Array, uint32: Uint32Array };
const RESERVED = new Set(['v', 'type', 'tensors']);

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** `{type} message: a: why; b: why` from zod issues. */
function describeIssues(type: string, issues: readonly { path: PropertyKey[]; message: string }[]): string {
  const parts = issues.map((i) => (i.path.length ? `field '${i.path.map(String).join('.')}': ${i.message}` : i.message));
  return `${type} message: ${parts.join('; ')}`;
}

export function encodeMessage(message: Message, options: EncodeOptions = {}): Buffer[] {
  const type = (message as { type?: unknown }).type;
  if (!isMessageType(type)) throw new CohortError(`cannot encode a message of unknown type '${String(type)}'`, { code: 'INVALID_MESSAGE' });
  const parsed = messageSchemas[type].safeParse(message);
  if (!parsed.success) throw new CohortError(`cannot encode ${describeIssues(type, parsed.error.issues)}`, { code: 'INVALID_MESSAGE' });
  const header: Record<string, unknown> = { v: PROTOCOL_VERSION };
  const tensors: TensorHeader[] = [];
  const frames: Buffer[] = [];
  for (const [key, value] of Object.entries(parsed.data)) {
    if (value === undefined) continue;
    if (!isTensorFrame(value)) {
      header[key] = value;
      continue;
    }
    const half = options.float16 && value.dtype === 'float32';
    const data = half ? float32ToFloat16(value.data as Float32Array) : value.data;
    frames.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    tensors.push({ key, dtype: half ? 'float16' : value.dtype, shape: value.shape, byteLength: data.byteLength });
  }
  header.tensors = tensors;
  return [packr.pack(header), ...frames];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Checks one `tensors` entry of the header; returns why it is wrong, or undefined. */
function checkTensorHeader(t: unknown, i: number, header: Record<string, unknown>, limits: DecodeLimits): string | undefined {
  if (!isPlainObject(t)) return `tensors[${i}] is not a map`;
  const { key, dtype, shape, byteLength } = t;
  if (typeof key !== 'string' || key === '') return `tensors[${i}].key must be a non-empty string`;
  const where = `tensor '${key}'`;
  if (RESERVED.has(key) || Object.hasOwn(header, key)) return `${where} clashes with a header field of that name`;
  if (!DTYPES.includes(dtype as Dtype)) return `${where} has unknown dtype ${JSON.stringify(dtype)} (expected one of ${DTYPES.join(', ')})`;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return `${where} shape must be a list of non-negative integers`;
  }
  let elements = 1;
  for (const d of shape as number[]) {
    elements *= d;
    if (elements > limits.maxTensorElements) {
      return `${where} of shape [${shape}] is over the limit of ${limits.maxTensorElements} elements`;
    }
  }
  const expected = elements * BYTES[dtype as Dtype];
  if (byteLength !== expected) {
    return `${where} declares byteLength ${JSON.stringify(byteLength)} but shape [${shape}] of ${dtype} needs ${expected}`;
  }
  return undefined;
}

/** The frame's bytes as a typed array: a view when aligned, else an aligned copy. */
function view(frame: Uint8Array, dtype: Dtype, length: number): TensorFrame['data'] {
  const bytes = frame.byteOffset % BYTES[dtype] === 0 ? frame : new Uint8Array(frame); // (Buffer#slice would not copy)
  return new ARRAYS[dtype](bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
}

export function decodeMessage(frames: readonly Uint8Array[], limits: Partial<DecodeLimits> = {}): DecodeResult {
  try {
    return decode(frames, { ...DEFAULT_LIMITS, ...limits });
  } catch (error) {
    return { ok: false, code: 'MALFORMED_MESSAGE', error: `cannot decode message: ${(error as Error)?.message ?? String(error)}` };
  }
}

function decode(frames: readonly Uint8Array[], limits: DecodeLimits): DecodeResult {
  const fail = (error: string, code: DecodeFailure = 'MALFORMED_MESSAGE'): DecodeResult => ({ ok: false, error, code });
  if (frames.length === 0) return fail('empty message: no header frame');
  const total = frames.reduce((sum, f) => sum + f.byteLength, 0);
  if (total > limits.maxMessageBytes) return fail(`message of ${total} bytes is over the limit of ${limits.maxMessageBytes} bytes`);
  let header: unknown;
  try {
    header = unpackr.unpack(frames[0]);
  } catch (error) {
    return fail(`header frame is not valid msgpack (${(error as Error).message})`);
  }
  if (!isPlainObject(header)) return fail('header frame is not a msgpack map');
  const { v, type, tensors, ...fields } = header;
  if (v !== PROTOCOL_VERSION) {
    return fail(`protocol version ${JSON.stringify(v)} is not supported (this side speaks version ${PROTOCOL_VERSION})`, 'PROTOCOL_VERSION');
  }
  if (!isMessageType(type)) return fail(`unknown message type ${JSON.stringify(type)}`);
  if (!Array.isArray(tensors)) return fail(`${type} message: header has no tensors list`);
  const seen = new Set<string>();
  for (const [i, t] of tensors.entries()) {
    const problem = checkTensorHeader(t, i, fields, limits);
    if (problem) return fail(`${type} message: ${problem}`);
    if (seen.has(t.key)) return fail(`${type} message: tensor '${t.key}' is listed twice`);
    seen.add(t.key);
  }
  if (frames.length !== 1 + tensors.length) {
    return fail(`${type} message: header lists ${tensors.length} tensors but ${frames.length - 1} data frames came with it`);
  }
  const message: Record<string, unknown> = { type, ...fields };
  for (const [i, t] of (tensors as TensorHeader[]).entries()) {
    const frame = frames[i + 1];
    if (frame.byteLength !== t.byteLength) {
      return fail(`${type} message: tensor '${t.key}' declares ${t.byteLength} bytes but its frame has ${frame.byteLength}`);
    }
    const length = t.byteLength / BYTES[t.dtype];
    const data = view(frame, t.dtype, length);
    message[t.key] = t.dtype === 'float16' ? { dtype: 'float32', shape: t.shape, data: float16ToFloat32(data as Uint16Array) } : { dtype: t.dtype, shape: t.shape, data };
  }
  const parsed = messageSchemas[type].safeParse(message);
  if (!parsed.success) return fail(describeIssues(type, parsed.error.issues));
  return { ok: true, message: parsed.data as Message };
}

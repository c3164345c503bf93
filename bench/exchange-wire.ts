/**
 * What the exchange benchmark's two processes agree on: the synthetic members' predictions
 * (rows of random probabilities from a fixed seed, so both sides can compute the expected
 * teaching signals), the frames raw ZeroMQ moves in place of the cohort's messages, and the
 * spec and results passed between bench/exchange.ts and its member process
 * (bench/exchange-members.ts).
 */
import { mulberry32 } from '../shared/data/sampler.js';
import { encodeMessage } from '../shared/protocol/codec.js';

/** The three paths the bench alternates, step by step. */
export const PATHS = ['cohort', 'raw', 'rawRead'] as const;

/** The member process's argument (JSON). */
export interface MembersSpec {
  /** The real coordinator's endpoint. */
  cohort: string;
  /** The raw ZeroMQ router's endpoint. */
  raw: string;
  /** The endpoint of the raw ZeroMQ router that also reads every frame it receives once. */
  rawRead: string;
  members: number;
  batch: number;
  classes: number;
  steps: number;
  warmup: number;
  sleepMs: number;
}

/** What the member process reports (IPC message) once every step has run. */
export interface MembersResult {
  /** Per timed step, ms from the first member's send to the last member holding its teaching signal. */
  cohort: number[];
  /** The same for raw ZeroMQ. */
  raw: number[];
  /** The same for raw ZeroMQ whose router reads every frame it receives once. */
  rawRead: number[];
  /** Median ms one member spends encoding its predictions message (in its own process, outside the timed exchange). */
  encodeMs: number;
  /** Median ms one member spends decoding its teaching message (likewise). */
  decodeMs: number;
}

/** Member i's probabilities: `batch` rows of `classes` values summing to 1, as a worker sends them after its softmax. */
export function syntheticProbs(batch: number, classes: number, member: number): Float32Array {
  const random = mulberry32(1000 + member);
  const probs = new Float32Array(batch * classes);
  for (let k = 0; k < probs.length; k++) probs[k] = random();
  for (let r = 0; r < batch; r++) {
    const row = probs.subarray(r * classes, (r + 1) * classes);
    const sum = row.reduce((a, b) => a + b, 0);
    for (let c = 0; c < classes; c++) row[c] /= sum;
  }
  return probs;
}

/** The frames of one member's predictions message and of one teaching message, as the codec writes them (own copies). */
export function wireFrames(batch: number, classes: number): { up: Buffer[]; down: Buffer[] } {
  const up = encodeMessage({
    type: 'predictions',
    step: 0,
    epoch: 0,
    batch: 0,
    indices: { dtype: 'uint32', shape: [batch], data: new Uint32Array(batch) },
    probs: { dtype: 'float32', shape: [batch, classes], data: new Float32Array(batch * classes) },
    negEntropy: -1,
    loss: 1,
    generation: 0,
  });
  const down = encodeMessage({
    type: 'teaching',
    step: 0,
    teaching: { dtype: 'float32', shape: [batch, classes], data: new Float32Array(batch * classes) },
    peerNegEntropy: -1,
    peerCount: 1,
    generation: 0,
  });
  return { up: up.map((f) => Buffer.from(f)), down: down.map((f) => Buffer.from(f)) };
}

export const bytesOf = (frames: readonly Uint8Array[]) => frames.reduce((sum, f) => sum + f.byteLength, 0);

/** The sample indices of a step's batch (the same for every member). */
export function stepIndices(step: number, batch: number): Uint32Array {
  const indices = new Uint32Array(batch);
  for (let r = 0; r < batch; r++) indices[r] = (step * batch + r) % 60_000;
  return indices;
}

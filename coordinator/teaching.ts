/**
 * The teaching signals the coordinator builds from one step's predictions. Workers send their
 * probabilities at the run's temperature, p_i = softmax(z_i / T), and their batch-mean negative
 * entropy; the coordinator only averages. For DML each member gets one tensor, the mean of its
 * peers' probabilities, plus the peers' mean negative entropy (the scalar
 * dmlLossFromPeerSummary needs for the loss value); DML_e uses the same mean as its ensemble
 * target; KD students get the teachers' mean. Sums accumulate as predictions arrive, so when the
 * last member's arrive only the leave-one-out subtractions remain: O(K) work, not O(K^2).
 *
 * The arithmetic runs in WebAssembly SIMD (teaching-kernels.c), about 4x faster than the same
 * loops in JavaScript, with bit-identical results: float64 sums of the float32 probabilities,
 * each mean rounded to float32 once. Each PredictionSums owns a small WebAssembly memory laid out
 * as [float64 sum | a float32 copy of each member's predictions | a float32 output slot].
 */
import { CohortError } from '../shared/errors.js';
import { Wasm, WASM_PAGE_BYTES, type WasmMemory } from '../shared/wasm/webassembly.js';
import { TEACHING_KERNELS_WASM_BASE64 } from './teaching-kernels-wasm.js';

export interface PeerTeaching {
  /** mean over peers j != i of p_j, [rows, classes], float32 for the wire. */
  meanProbs: Float32Array;
  /** The peers' mean of their batch-mean negative entropies. */
  meanNegEntropy: number;
}

/** teaching-kernels.c; pointers are byte offsets into the instance's memory. */
interface TeachingKernels {
  sum_add(sum: number, probs: number, n: number, first: number): void;
  leave_one_out(sum: number, probs: number, out: number, n: number, scale: number): void;
  mean(sum: number, out: number, n: number, count: number): void;
}

/** WebAssembly's 32-bit address space: 65536 pages of 64 KiB. */
const MAX_PAGES = 65_536;
/** The module's declared minimum memory (clang reserves a page it never uses: no stack, no data). */
const MIN_PAGES = 2;
let compiled: object | undefined;

/** Running sums of the predictions of one step (reusable for a later step of the same size: reset()). */
export class PredictionSums {
  negEntropySum = 0;
  count = 0;
  private readonly memory: WasmMemory;
  private readonly kernels: TeachingKernels;
  /** The slot each added prediction array was copied to. */
  private readonly slotOf = new Map<Float32Array, number>();

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`predictions of ${size} values`);
    this.memory = new Wasm.Memory({ initial: this.pagesFor(2) });
    compiled ??= new Wasm.Module(new Uint8Array(Buffer.from(TEACHING_KERNELS_WASM_BASE64, 'base64')));
    this.kernels = new Wasm.Instance(compiled, { env: { memory: this.memory } }).exports as TeachingKernels;
  }

  /** Forgets every prediction added (keeps the memory): ready for another step. */
  reset(): this {
    this.count = 0;
    this.negEntropySum = 0;
    this.slotOf.clear();
    return this;
  }

  add(probs: Float32Array, negEntropy: number): void {
    this.checkLength(probs, 'predictions');
    const slot = this.count;
    this.reserve(slot + 2); // this member's slot and the output slot after it
    this.view(slot).set(probs);
    this.kernels.sum_add(0, this.offset(slot), this.size, slot === 0 ? 1 : 0);
    this.slotOf.set(probs, slot);
    this.negEntropySum += negEntropy;
    this.count++;
  }

  /** The mean of all predictions added (a teacher ensemble); NaN before any. */
  mean(): Float32Array {
    const { size, count } = this;
    if (count === 0) return new Float32Array(size).fill(NaN);
    this.kernels.mean(0, this.offset(count), size, count);
    return this.view(count).slice();
  }

  /**
   * The mean of every prediction added except `probs` (which was added): member i's peers.
   * Written to `out` when given, which may be `probs` itself: a coordinator that no longer
   * needs a member's predictions can send them back as its teaching signal without allocating
   * (on a machine where fresh memory is expensive, 1 MB of new pages costs milliseconds).
   */
  leaveOneOut(probs: Float32Array, negEntropy: number, out?: Float32Array): PeerTeaching {
    if (this.count < 2) throw new Error(`a leave-one-out mean needs at least 2 members, got ${this.count}`);
    this.checkLength(probs, 'predictions');
    if (out !== undefined) this.checkLength(out, 'an output');
    const output = this.count;
    let slot = this.slotOf.get(probs);
    if (slot === undefined) {
      // Not one of the arrays added (an equal copy, say): read it from the output slot.
      this.view(output).set(probs);
      slot = output;
    }
    const scale = 1 / (this.count - 1);
    this.kernels.leave_one_out(0, this.offset(slot), this.offset(output), this.size, scale);
    const meanProbs = out ?? new Float32Array(this.size);
    meanProbs.set(this.view(output));
    return { meanProbs, meanNegEntropy: (this.negEntropySum - negEntropy) * scale };
  }

  private checkLength(a: Float32Array, what: string): void {
    if (a.length !== this.size) throw new Error(`${what} of ${a.length} values, expected ${this.size}`);
  }

  /** Byte offset of float32 slot i (after the float64 sum). */
  private offset(slot: number): number {
    return 8 * this.size + 4 * this.size * slot;
  }

  private view(slot: number): Float32Array {
    return new Float32Array(this.memory.buffer, this.offset(slot), this.size);
  }

  private pagesFor(slots: number): number {
    return Math.max(MIN_PAGES, Math.ceil(this.offset(slots) / WASM_PAGE_BYTES));
  }

  /** Grows the memory to hold `slots` float32 slots. */
  private reserve(slots: number): void {
    const pages = this.pagesFor(slots);
    const have = this.memory.buffer.byteLength / WASM_PAGE_BYTES;
    if (pages <= have) return;
    if (pages > MAX_PAGES) {
      throw new CohortError(
        `the coordinator cannot sum ${slots - 1} predictions of ${this.size} values: its teaching buffers would need ${(this.offset(slots) / 2 ** 30).toFixed(1)} GiB, over WebAssembly's 4 GiB`,
        { code: 'OUT_OF_MEMORY' },
      );
    }
    this.memory.grow(pages - have);
  }
}

/** For each of K >= 2 members, the summary of its K - 1 peers' predictions. */
export function leaveOneOutTeaching(probs: readonly Float32Array[], negEntropies: readonly number[]): PeerTeaching[] {
  if (probs.length < 2) throw new Error(`leaveOneOutTeaching needs at least 2 members, got ${probs.length}`);
  const sums = new PredictionSums(probs[0].length);
  probs.forEach((p, i) => sums.add(p, negEntropies[i]));
  return probs.map((p, i) => sums.leaveOneOut(p, negEntropies[i]));
}

/**
 * Evaluation records: each worker's metrics per epoch as they are reported, and the cohort
 * ensemble's, computed from the members' test logits once every member has sent its logits of
 * a batch and reported its metrics of the epoch. Keeps the last record of each worker.
 */
import { EnsembleMetrics } from '../shared/metrics/ensemble-metrics.js';
import type { ReliabilityBin } from '../shared/metrics/records.js';
import type { MessageOf } from '../shared/protocol/messages.js';
import type { Role } from './membership.js';
import { float32 } from './step-server.js';

export interface EvalRecord {
  epoch: number;
  /** A mid-epoch evaluation's steps done. */
  step?: number;
  worker: string;
  role: 'member' | 'teacher' | 'ensemble';
  accuracy: number;
  nll: number;
  ece: number;
  [metric: string]: number | string | undefined;
}

/** A record to write, with its reliability diagram. */
export interface EvalEntry {
  record: EvalRecord;
  reliability?: ReliabilityBin[];
}

/** Which evaluation a message belongs to: an epoch's end, or a mid-epoch one at a step (evalEverySteps). */
const evaluationKey = (m: { epoch: number; step?: number }) => (m.step === undefined ? `epoch ${m.epoch}` : `step ${m.step}`);

export class Evaluations {
  private readonly batches = new Map<string, Map<string, { logits: Float32Array; labels: Int32Array; classes: number }>>();
  private readonly ensembles = new Map<string, EnsembleMetrics>();
  private readonly reported = new Map<string, Set<string>>();
  private readonly final = new Map<string, EvalRecord>();

  constructor(private readonly members: readonly string[]) {}

  /** A member's test logits of one batch; the ensemble takes a batch once every member's is in. */
  addLogits(name: string, role: Role, m: MessageOf<'evalLogits'>): void {
    if (role !== 'member') return;
    const key = `${evaluationKey(m)}:${m.batch}`;
    let batch = this.batches.get(key);
    if (!batch) this.batches.set(key, (batch = new Map()));
    batch.set(name, { logits: float32(m.logits), labels: m.labels.data as Int32Array, classes: m.logits.shape.at(-1)! });
    if (batch.size < this.members.length) return;
    let ensemble = this.ensembles.get(evaluationKey(m));
    if (!ensemble) this.ensembles.set(evaluationKey(m), (ensemble = new EnsembleMetrics()));
    const first = batch.get(this.members[0])!;
    ensemble.add(
      this.members.map((n) => batch.get(n)!.logits),
      first.labels,
      first.classes,
    );
    this.batches.delete(key);
  }

  /** A worker's metrics of an epoch: the records to write (its own, then the ensemble's once every member has reported). */
  addEval(name: string, role: Role, m: MessageOf<'eval'>): EvalEntry[] {
    const key = evaluationKey(m);
    const at: { step?: number } = m.step === undefined ? {} : { step: m.step };
    const entries: EvalEntry[] = [
      this.keep({
        record: { epoch: m.epoch, ...at, worker: name, role, accuracy: m.metrics.accuracy, nll: m.metrics.nll, ece: m.metrics.ece, ...m.metrics },
        ...(m.reliability ? { reliability: m.reliability } : {}),
      }),
    ];
    if (role !== 'member') return entries;
    let reported = this.reported.get(key);
    if (!reported) this.reported.set(key, (reported = new Set()));
    reported.add(name);
    const ensemble = this.ensembles.get(key);
    if (reported.size === this.members.length && ensemble && this.members.length > 1) {
      const { bins, ...metrics } = ensemble.result();
      const reliability = bins.map((b) => ({ ...b, accuracy: b.count > 0 ? b.accuracy : null, confidence: b.count > 0 ? b.confidence : null }));
      entries.push(this.keep({ record: { epoch: m.epoch, ...at, worker: 'ensemble', role: 'ensemble', ...metrics }, reliability }));
      this.ensembles.delete(key);
      this.reported.delete(key);
    }
    return entries;
  }

  /** The last record of each of `order` that has one, in that order. */
  finalRecords(order: readonly string[]): EvalRecord[] {
    return order.filter((n) => this.final.has(n)).map((n) => this.final.get(n)!);
  }

  /** A rollback: evaluations in progress are forgotten (the last records stay). */
  rollBack(): void {
    this.batches.clear();
    this.ensembles.clear();
    this.reported.clear();
  }

  private keep(entry: EvalEntry): EvalEntry {
    this.final.set(entry.record.worker, entry.record);
    return entry;
  }
}

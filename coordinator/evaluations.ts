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
  worker: string;
  role: 'member' | 'teacher' | 'ensemble';
  accuracy: number;
  nll: number;
  ece: number;
  [metric: string]: number | string;
}

/** A record to write, with its reliability diagram. */
export interface EvalEntry {
  record: EvalRecord;
  reliability?: ReliabilityBin[];
}

export class Evaluations {
  private readonly batches = new Map<string, Map<string, { logits: Float32Array; labels: Int32Array; classes: number }>>();
  private readonly ensembles = new Map<number, EnsembleMetrics>();
  private readonly reported = new Map<number, Set<string>>();
  private readonly final = new Map<string, EvalRecord>();

  constructor(private readonly members: readonly string[]) {}

  /** A member's test logits of one batch; the ensemble takes a batch once every member's is in. */
  addLogits(name: string, role: Role, m: MessageOf<'evalLogits'>): void {
    if (role !== 'member') return;
    const key = `${m.epoch}:${m.batch}`;
    let batch = this.batches.get(key);
    if (!batch) this.batches.set(key, (batch = new Map()));
    batch.set(name, { logits: float32(m.logits), labels: m.labels.data as Int32Array, classes: m.logits.shape.at(-1)! });
    if (batch.size < this.members.length) return;
    let ensemble = this.ensembles.get(m.epoch);
    if (!ensemble) this.ensembles.set(m.epoch, (ensemble = new EnsembleMetrics()));
    const first = batch.get(this.members[0])!;
    ensemble.add(this.members.map((n) => batch.get(n)!.logits), first.labels, first.classes);
    this.batches.delete(key);
  }

  /** A worker's metrics of an epoch: the records to write (its own, then the ensemble's once every member has reported). */
  addEval(name: string, role: Role, m: MessageOf<'eval'>): EvalEntry[] {
    const entries: EvalEntry[] = [this.keep({ record: { epoch: m.epoch, worker: name, role, accuracy: m.metrics.accuracy, nll: m.metrics.nll, ece: m.metrics.ece, ...m.metrics }, ...(m.reliability ? { reliability: m.reliability } : {}) })];
    if (role !== 'member') return entries;
    let reported = this.reported.get(m.epoch);
    if (!reported) this.reported.set(m.epoch, (reported = new Set()));
    reported.add(name);
    const ensemble = this.ensembles.get(m.epoch);
    if (reported.size === this.members.length && ensemble && this.members.length > 1) {
      const { bins, ...metrics } = ensemble.result();
      const reliability = bins.map((b) => ({ ...b, accuracy: b.count > 0 ? b.accuracy : null, confidence: b.count > 0 ? b.confidence : null }));
      entries.push(this.keep({ record: { epoch: m.epoch, worker: 'ensemble', role: 'ensemble', ...metrics }, reliability }));
      this.ensembles.delete(m.epoch);
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

/**
 * Follows a run's records (RUN/metrics.jsonl, shared/metrics/records.ts) while it runs: tests
 * react to typed events (a worker admitted with its pid, a step reported, a checkpoint
 * complete) instead of log lines.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { metricsRecordSchema, type EventName, type EventRecord, type MetricsRecord } from '../../shared/metrics/records.js';

export class RunRecordsFollower {
  readonly records: MetricsRecord[] = [];
  private offset: number;
  private readonly timer: NodeJS.Timeout;
  private readonly file: string;

  /** Follows `runDir`'s records written from now on (those already there are skipped), every `intervalMs`. */
  constructor(
    runDir: string,
    private readonly onRecord: (record: MetricsRecord) => void = () => {},
    intervalMs = 20,
  ) {
    this.file = join(runDir, 'metrics.jsonl');
    this.offset = existsSync(this.file) ? readFileSync(this.file).length : 0;
    this.timer = setInterval(() => this.poll(), intervalMs);
  }

  /** Reads the complete lines written since the last poll. */
  poll(): void {
    if (!existsSync(this.file)) return;
    const bytes = readFileSync(this.file);
    const end = bytes.lastIndexOf(0x0a) + 1;
    if (end <= this.offset) return;
    const text = bytes.subarray(this.offset, end).toString('utf8');
    this.offset = end;
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      const record = metricsRecordSchema.parse(JSON.parse(line));
      this.records.push(record);
      this.onRecord(record);
    }
  }

  /** Stops following (after a last read). */
  stop(): MetricsRecord[] {
    clearInterval(this.timer);
    this.poll();
    return this.records;
  }
}

/** The events named `name` among `records`. */
export function eventsOf<E extends EventName>(records: readonly MetricsRecord[], name: E): EventRecord<E>[] {
  return records.filter((r): r is EventRecord<E> => r.kind === 'event' && r.event === name);
}

/** The run-finished event of `records` (the last one). */
export function finished(records: readonly MetricsRecord[]): EventRecord<'run-finished'> | undefined {
  return eventsOf(records, 'run-finished').at(-1);
}

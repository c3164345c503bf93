/**
 * The run's records file, `RUN/metrics.jsonl` (schema: shared/metrics/records.ts): one JSON
 * line per record, stamped with the time; events also go to `onEvent`.
 */
import { appendFileSync } from 'node:fs';
import { CohortError } from '../shared/errors.js';
import { fileErrorReason } from '../shared/io/atomic-write.js';
import type { EventName, EventRecord, MetricsRecord } from '../shared/metrics/records.js';

/** Omit over each member of a union. */
export type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export class RunRecords {
  constructor(
    readonly file: string,
    private readonly onEvent?: (event: EventRecord) => void,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  write(entry: DistributiveOmit<MetricsRecord, 'time'>): void {
    const record = { ...entry, time: this.clock().toISOString() };
    try {
      appendFileSync(this.file, `${JSON.stringify(record)}\n`);
    } catch (error) {
      throw new CohortError(`cannot append to ${this.file}: ${fileErrorReason(error)}`, { code: 'FILE_UNWRITABLE', cause: error });
    }
    if (record.kind === 'event') this.onEvent?.(record as EventRecord);
  }

  /** Writes the event `event` with its fields. */
  event<E extends EventName>(event: E, fields: Omit<EventRecord<E>, 'kind' | 'time' | 'event'>): void {
    this.write({ kind: 'event', event, ...fields } as unknown as DistributiveOmit<MetricsRecord, 'time'>);
  }
}

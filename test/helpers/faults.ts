/**
 * Fault injection for the tests: `cohort train` run as a child process whose run records
 * (metrics.jsonl, followed as they are written) can trigger kills, and a trigger that SIGKILLs
 * a named worker once a step is reported.
 */
import { loadRunConfig, runDirectory } from '../../shared/config/run-config.js';
import type { MetricsRecord } from '../../shared/metrics/records.js';
import { startCli } from './cli.js';
import { RunRecordsFollower } from './events.js';

export interface Run {
  code: number | null;
  output: string;
  /** The run's records written while it ran (events, steps, evaluations). */
  records: MetricsRecord[];
}

/** The run directory of the config file `path`. */
export function runDirOf(path: string): string {
  return runDirectory(loadRunConfig(path));
}

/**
 * `cohort train ARGS --log-every 1` as a child process (with extra environment variables:
 * failpoints); `onRecord` sees every record of the run as it is written (and may kill workers).
 */
export async function train(
  args: string[],
  onRecord: (record: MetricsRecord) => void = () => {},
  options: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<Run> {
  const follower = new RunRecordsFollower(runDirOf(args[0]), onRecord);
  const { code, output } = await startCli(['train', ...args, '--log-every', '1'], { timeoutMs: options.timeoutMs ?? 240_000, ...(options.env ? { env: options.env } : {}) }).exited;
  return { code, output, records: follower.stop() };
}

/** Tracks the pid of each worker's process from its admissions. */
export function pidTracker(): { pids: Map<string, number>; onRecord: (record: MetricsRecord) => void } {
  const pids = new Map<string, number>();
  return { pids, onRecord: (r) => void (r.kind === 'event' && r.event === 'worker-admitted' && pids.set(r.worker, r.pid)) };
}

/** Kills worker `name` (member or teacher) with SIGKILL once a worker reports global step `step` done (step records: progressEvery 1), up to `times` times; `onKill` gets each kill's time. */
export function killAt(name: string, step: number, times = 1, onKill: (at: number) => void = () => {}): (record: MetricsRecord) => void {
  const { pids, onRecord } = pidTracker();
  let kills = 0;
  return (record) => {
    onRecord(record);
    if (record.kind === 'step' && record.step + 1 === step && kills < times && pids.has(name)) {
      kills++;
      process.kill(pids.get(name)!, 'SIGKILL');
      onKill(Date.now());
      pids.delete(name);
    }
  };
}

/**
 * Reads run directories for `cohort report`: each RUN_DIR's `metrics.jsonl`, parsed by the one
 * schema (`shared/metrics/records.ts`), into the records the charts need. Lines that are not
 * records (garbage, or eval lines written before records had a `kind`) are skipped and counted,
 * with the first problem kept so the report can say what was skipped. A RUN_DIR that does not
 * exist, has no metrics.jsonl, or has no usable record is a CohortError naming it.
 *
 * Repeated records (a run resumed or rolled back to a checkpoint redoes steps and evaluations)
 * are reduced to the last one written: the last line for a (worker, step) or (worker, epoch) wins.
 */
import { readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { CohortError } from '../shared/errors.js';
import { fileErrorReason } from '../shared/io/atomic-write.js';
import { parseMetricsLines, type EvalRecord, type ProblemKind, type RunRecord, type StepRecord } from '../shared/metrics/records.js';

export const METRICS_FILE = 'metrics.jsonl';

export interface SkippedLines {
  count: number;
  /** Non-empty lines in the file. */
  of: number;
  /** The first problem, as parseMetricsLines words it ('line 3: not JSON'). */
  first?: string;
  /** The first problem's kind: 'no-kind' is an eval line written before records had a kind. */
  firstKind?: ProblemKind;
}

export interface RunData {
  /** The directory as given on the command line. */
  dir: string;
  /** A name unique among the runs of one report: the run's name, else the folder's. */
  label: string;
  /** The last `run` record (the latest start or resume), if any. */
  run?: RunRecord;
  /** Step records, one per (worker, step), by step. */
  steps: StepRecord[];
  /** Eval records, one per (worker, epoch), by epoch. */
  evals: EvalRecord[];
  /** Mid-epoch evaluations (evalEverySteps), by step; empty when the run made none. */
  stepEvals: (EvalRecord & { step: number })[];
  /** Worker names in display order: members, teachers (as the run record lists them), then others, ensemble last. */
  workers: string[];
  skipped: SkippedLines;
}

/** A hint for the most common skipped line: an eval line from before records had a `kind`. */
function explain(problem: string, kind: ProblemKind | undefined): string {
  return kind === 'no-kind' ? `${problem}; eval lines written before metrics records had a kind are not read` : problem;
}

/** The metrics file of a run directory. */
export const metricsPath = (run: { dir: string }) => join(run.dir, METRICS_FILE);

/** Says what was skipped, or undefined when nothing was: 'skipped 3 of 10 lines (first: ...)'. */
export function describeSkipped(skipped: SkippedLines): string | undefined {
  if (skipped.count === 0) return undefined;
  return `skipped ${skipped.count} of ${skipped.of} lines that are not metrics records (first: ${explain(skipped.first ?? '?', skipped.firstKind)})`;
}

function lastBy<T>(records: T[], key: (r: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const r of records) {
    const k = key(r);
    byKey.delete(k); // re-insert: a later record takes the later position
    byKey.set(k, r);
  }
  return [...byKey.values()];
}

function workerOrder(run: RunRecord | undefined, steps: StepRecord[], evals: EvalRecord[]): string[] {
  const names: string[] = [];
  const add = (name: string) => {
    if (!names.includes(name)) names.push(name);
  };
  for (const m of run?.members ?? []) add(m.name);
  for (const t of run?.teachers ?? []) add(t.name);
  const seen = [...steps, ...evals].map((r) => r.worker);
  for (const name of seen) if (name !== 'ensemble') add(name);
  if (seen.includes('ensemble')) add('ensemble');
  return names.filter((n) => seen.includes(n));
}

/** Reads one run directory; `label` is filled in by readRuns. */
export function readRun(dir: string): RunData {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (error) {
    throw new CohortError(`run directory '${dir}' cannot be read: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : fileErrorReason(error)}`, {
      code: 'REPORT_INPUT_INVALID',
      cause: error,
    });
  }
  if (!isDir) throw new CohortError(`'${dir}' is not a run directory: it is a file (give the folder that holds ${METRICS_FILE})`, { code: 'REPORT_INPUT_INVALID' });
  const file = join(dir, METRICS_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new CohortError(`run directory '${dir}' has no ${METRICS_FILE} (a run directory is RUNDIR/NAME, where cohort train writes config.json and ${METRICS_FILE})`, {
        code: 'REPORT_INPUT_INVALID',
      });
    }
    throw new CohortError(`cannot read ${file}: ${fileErrorReason(error)}`, { code: 'FILE_UNREADABLE', cause: error });
  }
  const { records, problems, problemKinds } = parseMetricsLines(text);
  const skipped: SkippedLines = { count: problems.length, of: records.length + problems.length, ...(problems[0] ? { first: problems[0], firstKind: problemKinds[0] } : {}) };
  const runs = records.filter((r): r is RunRecord => r.kind === 'run');
  const steps = lastBy(
    records.filter((r): r is StepRecord => r.kind === 'step'),
    (r) => `${r.worker}\u0000${r.step}`,
  ).sort((a, b) => a.step - b.step);
  const evals = lastBy(
    records.filter((r): r is EvalRecord => r.kind === 'eval' && r.step === undefined),
    (r) => `${r.worker}\u0000${r.epoch}`,
  ).sort((a, b) => a.epoch - b.epoch);
  /** Mid-epoch evaluations (evalEverySteps), by step. */
  const stepEvals = lastBy(
    records.filter((r): r is EvalRecord & { step: number } => r.kind === 'eval' && r.step !== undefined),
    (r) => `${r.worker}\u0000${r.step}`,
  ).sort((a, b) => a.step - b.step);
  if (steps.length === 0 && evals.length === 0 && stepEvals.length === 0) {
    const what = skipped.of === 0 ? 'it is empty' : skipped.count > 0 ? describeSkipped(skipped) : 'it holds no step or eval record';
    throw new CohortError(`${file} has no usable records: ${what}`, { code: 'REPORT_INPUT_INVALID' });
  }
  const run = runs.at(-1);
  return { dir, label: run?.run ?? basename(resolve(dir)), ...(run ? { run } : {}), steps, evals, stepEvals, workers: workerOrder(run, steps, evals), skipped };
}

/** Reads every run directory and gives each a unique label (the directory is added when two runs share a name). */
export function readRuns(dirs: string[]): RunData[] {
  if (dirs.length === 0) throw new CohortError('name at least one run directory', { code: 'USAGE' });
  const runs = dirs.map(readRun);
  const counts = new Map<string, number>();
  for (const r of runs) counts.set(r.label, (counts.get(r.label) ?? 0) + 1);
  for (const r of runs) if ((counts.get(r.label) ?? 0) > 1) r.label = `${r.label} (${r.dir})`;
  // The same directory named twice: number the copies.
  const seen = new Map<string, number>();
  for (const r of runs) {
    const n = (seen.get(r.label) ?? 0) + 1;
    seen.set(r.label, n);
    if (n > 1) r.label = `${r.label} #${n}`;
  }
  return runs;
}

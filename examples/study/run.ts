/**
 * `npm run study [-- --seeds 2 --epochs 5 --only kd,dml-2 --out runs/study --train-limit N --parallel 2 --report]`:
 * the Fashion-MNIST study of the reference thesis on this machine. It runs every config of
 * examples/study once per seed, each as a real `cohort train` cohort (coordinator and worker
 * processes, loopback), several side by side so that every core has one worker process (KD and
 * cross-quality KD wait for their seed's teacher run: they load its final weights), then writes
 * `OUT/results.md` (test accuracy, ECE and NLL of every worker, mean and spread over seeds) and
 * `OUT/report.html` (cohort report of every run). A run whose final evaluation is already in
 * its metrics file is not run again (delete its folder, or pass --fresh, to redo it); each
 * run's own output goes to OUT/NAME/train.log.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { trainLocally } from '../../coordinator/launch-local.js';
import { resolveRunConfig, runDirectory, type RunConfig } from '../../shared/config/run-config.js';
import { CohortError } from '../../shared/errors.js';
import { parseMetricsLines, type EvalRecord } from '../../shared/metrics/records.js';
import { accuracySummary, describeDifference, inOrder, mean, pairedDifference } from './statistics.js';

const here = dirname(fileURLToPath(import.meta.url));

interface Result {
  experiment: string;
  seed: number;
  worker: string;
  role: string;
  downscaled: boolean;
  accuracy: number;
  /** Best test accuracy over all of the run's evaluations (every evalEverySteps steps and each epoch's end). */
  best: number;
  /** Spread (sample sd) of the test accuracy over the second half of the evaluations. */
  fluctuation: number;
  /** Evaluation-to-evaluation jitter over that second half (noise around a straight line: statistics.ts). */
  jitter: number;
  evaluations: number;
  ece: number;
  /** ECE over the last epoch's training batches (the thesis' measure), where recorded. */
  trainEce?: number;
  nll: number;
  /** Mean confidence (max probability) minus accuracy on the test set: < 0 under-confident. */
  overconfidence?: number;
  seconds?: number;
}

/** Mean confidence minus accuracy, from an evaluation's reliability bins. */
function overconfidence(e: EvalRecord): number | undefined {
  const bins = e.reliability?.filter((b) => b.count > 0);
  if (!bins?.length) return undefined;
  const n = bins.reduce((sum, b) => sum + b.count, 0);
  return bins.reduce((sum, b) => sum + (b.confidence! - b.accuracy!) * b.count, 0) / n;
}

/** The study's configs, in run order. */
function studyConfigs(only?: string[]): { file: string; raw: Record<string, unknown> }[] {
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.yaml'))
    .sort();
  const all = files.map((f) => ({ file: f, raw: parseYaml(readFileSync(join(here, f), 'utf8')) as Record<string, unknown> }));
  if (!only) return all;
  const names = new Set(all.map((c) => c.raw.name as string));
  const unknown = only.filter((n) => !names.has(n));
  if (unknown.length) throw new CohortError(`--only: no experiment named ${unknown.join(', ')} (known: ${[...names].join(', ')})`, { code: 'USAGE' });
  return all.filter((c) => only.includes(c.raw.name as string));
}

/** What a run was made with beyond its config: --epochs and --train-limit, when given. */
interface Overrides {
  epochs?: number;
  trainLimit?: number;
}

/**
 * A run's name: the experiment and seed, tagged with the overrides so that a run made with
 * `--epochs 10` is never taken for the configs' own (and their summaries live side by side).
 */
const runName = (experiment: string, seed: number, o: Overrides) => `${experiment}${o.epochs ? `-e${o.epochs}` : ''}${o.trainLimit ? `-n${o.trainLimit}` : ''}-s${seed}`;

/** The name of a seed's teacher run, whose final weights KD and cross-quality KD load. */
const teacherRun = (seed: number, o: Overrides) => runName('teacher', seed, o);

/** One experiment's config for a seed: its own name and run folder, the teacher of the same seed. */
function configFor(raw: Record<string, unknown>, seed: number, out: string, o: Overrides): RunConfig {
  const teachers = ((raw.teachers as Record<string, unknown>[] | undefined) ?? []).map((t) => ({ ...t, checkpoint: join(out, teacherRun(seed, o), 'teacher', 'final') }));
  return resolveRunConfig({
    ...raw,
    name: runName(raw.name as string, seed, o),
    seed,
    runDir: out,
    teachers,
    ...(o.epochs ? { epochs: o.epochs } : {}),
    ...(o.trainLimit ? { trainLimit: o.trainLimit } : {}),
  });
}

/**
 * A finished run's summary: the last (epoch-end) evaluation of every worker, all of its
 * evaluations in the order they ran, its steps per epoch and wall time. Kept in
 * `docs/study/NAME.json` (committed), so that a study can be completed over several
 * invocations and machines: a run whose summary is there is not run again.
 */
interface Summary {
  /** The settings the run was made with; a summary whose settings differ from the config's is not taken. */
  epochs?: number;
  batchSize?: number;
  evals: EvalRecord[];
  all: EvalRecord[];
  stepsPerEpoch: number;
  seconds: number;
}

const summaryPath = (summaries: string, config: RunConfig) => join(summaries, `${config.name}.json`);

/** The run's summary, from docs/study or from its metrics file when it finished there. */
function finished(config: RunConfig, summaries: string): Summary | undefined {
  const kept = summaryPath(summaries, config);
  if (existsSync(kept)) {
    const summary = JSON.parse(readFileSync(kept, 'utf8')) as Summary;
    if (summary.epochs === config.epochs && summary.batchSize === config.batchSize) return summary;
    console.log(`study: ${kept} was made with ${summary.epochs} epochs, batch ${summary.batchSize}; the config asks ${config.epochs}, ${config.batchSize}: run again`);
    return undefined;
  }
  const file = join(runDirectory(config), 'metrics.jsonl');
  if (!existsSync(file)) return undefined;
  const records = parseMetricsLines(readFileSync(file, 'utf8')).records;
  const all = records.filter((r): r is EvalRecord => r.kind === 'eval');
  const evals = all.filter((e) => e.epoch === config.epochs - 1 && e.step === undefined);
  const workers = [...config.members, ...config.teachers].map((w) => w.name);
  if (!workers.every((w) => evals.some((e) => e.worker === w))) return undefined;
  const times = records.map((r) => Date.parse(r.time));
  const lastStep = Math.max(0, ...records.filter((r) => r.kind === 'step').map((r) => (r as { step: number }).step + 1));
  return {
    epochs: config.epochs,
    batchSize: config.batchSize,
    evals,
    all,
    stepsPerEpoch: Math.max(1, Math.round(lastStep / config.epochs)),
    seconds: (Math.max(...times) - Math.min(...times)) / 1000,
  };
}

const pct = (v: number) => (100 * v).toFixed(2);

function meanAndSpread(values: number[], digits: (v: number) => string): string {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  if (values.length < 2) return digits(mean);
  const sd = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1));
  return `${digits(mean)} ± ${digits(sd)}`;
}

/** The results table: one row per experiment and worker, mean ± standard deviation over seeds. */
function resultsTable(results: Result[]): string {
  const keys = [...new Set(results.map((r) => `${r.experiment}\u0000${r.worker}`))];
  const lines = [
    '| experiment | worker | input | seeds | final test accuracy % | best test accuracy % | late spread (points) | late jitter (points) | ECE % | training-batch ECE % | NLL | confidence - accuracy (points) | run minutes |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const key of keys) {
    const [experiment, worker] = key.split('\u0000');
    const rows = results.filter((r) => r.experiment === experiment && r.worker === worker);
    const input = rows[0].downscaled ? '14x14' : '28x28';
    lines.push(
      `| ${experiment} | ${worker}${rows[0].role === 'teacher' ? ' (teacher)' : ''} | ${rows[0].role === 'ensemble' ? '-' : input} | ${rows.length} | ${meanAndSpread(
        rows.map((r) => r.accuracy),
        pct,
      )} | ${meanAndSpread(
        rows.map((r) => r.best),
        pct,
      )} | ${(100 * mean(rows.map((r) => r.fluctuation))).toFixed(2)} (${rows[0].evaluations} evals) | ${(100 * mean(rows.map((r) => r.jitter))).toFixed(2)} | ${meanAndSpread(
        rows.map((r) => r.ece),
        pct,
      )} | ${
        rows.every((r) => r.trainEce !== undefined)
          ? meanAndSpread(
              rows.map((r) => r.trainEce!),
              pct,
            )
          : '-'
      } | ${meanAndSpread(
        rows.map((r) => r.nll),
        (v) => v.toFixed(4),
      )} | ${
        rows.every((r) => r.overconfidence !== undefined)
          ? meanAndSpread(
              rows.map((r) => r.overconfidence!),
              (v) => (100 * v).toFixed(2),
            )
          : '-'
      } | ${(rows.reduce((a, r) => a + (r.seconds ?? 0), 0) / rows.length / 60).toFixed(1)} |`,
    );
  }
  return lines.join('\n');
}

/** The thesis' claims as paired contrasts over seeds: (experiment, worker, metric) a minus b. */
const CLAIMS: { claim: string; metric: 'accuracy' | 'best' | 'fluctuation' | 'jitter' | 'ece' | 'trainEce'; a: [string, string]; b: [string, string] }[] = [
  { claim: 'KD helps the student (final accuracy)', metric: 'accuracy', a: ['kd', 'student'], b: ['student', 'student'] },
  { claim: 'KD helps the student (best accuracy)', metric: 'best', a: ['kd', 'student'], b: ['student', 'student'] },
  { claim: 'DML helps a member (final accuracy, member a of 2)', metric: 'accuracy', a: ['dml-2', 'student-a'], b: ['student', 'student'] },
  { claim: 'DML is less stable than KD (late spread)', metric: 'fluctuation', a: ['dml-2', 'student-a'], b: ['kd', 'student'] },
  { claim: 'DML is less stable than the student alone (late spread)', metric: 'fluctuation', a: ['dml-2', 'student-a'], b: ['student', 'student'] },
  { claim: 'DML is less stable than KD (late jitter)', metric: 'jitter', a: ['dml-2', 'student-a'], b: ['kd', 'student'] },
  { claim: 'DML is less stable than the student alone (late jitter)', metric: 'jitter', a: ['dml-2', 'student-a'], b: ['student', 'student'] },
  { claim: "Tf-KD's extra smoothing hurts calibration (ECE, smooth - plain)", metric: 'ece', a: ['tfkd-smooth', 'student'], b: ['tfkd-plain', 'student'] },
  { claim: "Tf-KD's extra smoothing hurts calibration (training-batch ECE, smooth - plain)", metric: 'trainEce', a: ['tfkd-smooth', 'student'], b: ['tfkd-plain', 'student'] },
  { claim: 'cross-quality KD helps the 14x14 student (vs alone)', metric: 'accuracy', a: ['cross-quality-kd', 'student'], b: ['student-14px', 'student'] },
  { claim: 'cross-quality KD vs DML across qualities (14x14 student)', metric: 'accuracy', a: ['cross-quality-kd', 'student'], b: ['dml-14px', 'student'] },
  { claim: 'cross-quality KD at T 20 vs T 10 (14x14 student)', metric: 'accuracy', a: ['cross-quality-kd-t20', 'student'], b: ['cross-quality-kd', 'student'] },
  { claim: 'cross-quality KD at T 4 vs T 10 (14x14 student)', metric: 'accuracy', a: ['cross-quality-kd-t4', 'student'], b: ['cross-quality-kd', 'student'] },
  { claim: 'DML_e behaves as DML (3 members, member a, final accuracy)', metric: 'accuracy', a: ['dml-e', 'student-a'], b: ['dml-3', 'student-a'] },
  { claim: 'DML_e behaves as DML (3 members, member a, late jitter)', metric: 'jitter', a: ['dml-e', 'student-a'], b: ['dml-3', 'student-a'] },
];

/** Paired differences over seeds with 95% intervals, for each claim whose runs are there. */
function claimsTable(results: Result[]): string {
  const bySeed = ([experiment, worker]: [string, string], metric: (typeof CLAIMS)[number]['metric']) =>
    new Map(results.filter((r) => r.experiment === experiment && r.worker === worker && r[metric] !== undefined).map((r) => [r.seed, r[metric]!]));
  const lines = ['| claim | a - b (points), mean [95% interval] | seeds | outside the noise |', '|---|---|---|---|'];
  for (const c of CLAIMS) {
    const d = pairedDifference(bySeed(c.a, c.metric), bySeed(c.b, c.metric));
    if (d.n === 0) continue;
    const { text, outsideNoise } = describeDifference(d);
    lines.push(`| ${c.claim}: ${c.a.join('/')} - ${c.b.join('/')} | ${text} | ${d.n} | ${outsideNoise ? 'yes' : 'no'} |`);
  }
  return lines.join('\n');
}

/** One run of the study: an experiment at one seed. */
interface Job {
  experiment: string;
  seed: number;
  config: RunConfig;
  /** CPU cores it keeps busy: one per worker process, at most all of them. */
  slots: number;
  /** The run whose final weights it loads (its seed's teacher), if any. */
  needs?: string;
}

type Outcome = Summary;

/**
 * Runs the jobs, at most `cores` worker processes at once: in list order, a job starts when the
 * run it needs has finished and enough cores are free; a later, smaller job fills cores the next
 * one cannot use yet. Returns the outcome of each finished job by run name; a job whose teacher
 * failed is skipped, and the first failure is thrown once the running jobs have ended.
 */
async function schedule(jobs: Job[], cores: number, run: (job: Job) => Promise<Outcome>): Promise<Map<string, Outcome>> {
  const done = new Map<string, Outcome>();
  const failed = new Set<string>();
  const waiting = [...jobs];
  const running = new Set<Promise<void>>();
  let free = cores;
  let firstError: unknown;
  const names = new Set(jobs.map((j) => j.config.name));
  while (waiting.length || running.size) {
    for (let i = 0; i < waiting.length; i++) {
      const job = waiting[i];
      const blocked = job.needs !== undefined && names.has(job.needs) && !done.has(job.needs);
      if (job.needs && failed.has(job.needs)) {
        failed.add(job.config.name);
        console.log(`study: ${job.config.name} skipped: its teacher run ${job.needs} failed`);
        waiting.splice(i--, 1);
        continue;
      }
      if (blocked || job.slots > free || firstError !== undefined) continue;
      waiting.splice(i--, 1);
      free -= job.slots;
      const task: Promise<void> = run(job)
        .then((outcome) => void done.set(job.config.name, outcome))
        .catch((error: unknown) => {
          failed.add(job.config.name);
          firstError ??= error;
        })
        .finally(() => {
          free += job.slots;
          running.delete(task);
        });
      running.add(task);
    }
    if (firstError !== undefined) waiting.length = 0;
    if (running.size) await Promise.race(running);
    else if (waiting.length) throw new CohortError(`study: ${waiting.map((j) => j.config.name).join(', ')} could not be scheduled`, { code: 'LAUNCH_FAILED' });
  }
  if (firstError !== undefined) throw firstError;
  return done;
}

/** Trains one run unless its final evaluation is already recorded; its output goes to RUN/train.log. */
async function runJob(job: Job, fresh: boolean, summaries: string, needed: ReadonlySet<string>): Promise<Outcome> {
  const { config } = job;
  const dir = runDirectory(config);
  if (fresh) rmSync(dir, { recursive: true, force: true });
  if (fresh) rmSync(summaryPath(summaries, config), { force: true });
  // A run whose final weights another run loads (a seed's teacher) is done only with them here.
  const weightsHere = config.members.every((m) => existsSync(join(dir, m.name, 'final', 'model.json')));
  const before = needed.has(config.name) && !weightsHere ? undefined : finished(config, summaries);
  if (!before && existsSync(summaryPath(summaries, config))) rmSync(summaryPath(summaries, config), { force: true });
  let outcome = before;
  if (!outcome) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const logFile = join(dir, 'train.log');
    const t0 = Date.now();
    console.log(`study: ${config.name} (${config.algorithm}, ${config.epochs} epochs, ${job.slots} core(s)) ...`);
    await trainLocally({ config, insecure: true, interactive: false, log: (line) => appendFileSync(logFile, `${line}\n`) });
    outcome = finished(config, summaries);
    if (!outcome) throw new CohortError(`${config.name}: finished without a final evaluation of every worker (see ${logFile})`, { code: 'RUN_INCOMPLETE' });
    outcome.seconds = (Date.now() - t0) / 1000;
    mkdirSync(summaries, { recursive: true });
    writeFileSync(summaryPath(summaries, config), `${JSON.stringify(outcome)}\n`);
  }
  const summary = outcome.evals
    .filter((e) => e.role !== 'teacher')
    .map((e) => `${e.worker} ${pct(e.accuracy)}% (ECE ${pct(e.ece)}%)`)
    .join(', ');
  console.log(`study: ${config.name}${before ? ' (done before)' : ''} in ${(outcome.seconds / 60).toFixed(1)} min: ${summary}`);
  return outcome;
}

async function main(): Promise<void> {
  const args = await yargs(hideBin(process.argv))
    .scriptName('npm run study --')
    .option('seeds', { type: 'number', default: 5, describe: 'seeds per experiment (paired: the same seeds for every experiment)' })
    .option('epochs', { type: 'number', describe: "override every config's epochs" })
    .option('only', { type: 'string', describe: 'comma-separated experiment names (the teacher is needed by kd and cross-quality-kd)' })
    .option('out', { type: 'string', default: 'runs/study', describe: 'folder of the runs, results.md and report.html' })
    .option('train-limit', { type: 'number', describe: 'train on the first N samples of each epoch only (a smoke run)' })
    .option('parallel', {
      type: 'number',
      default: availableParallelism(),
      describe: 'CPU cores to fill: runs go side by side, each taking one core per worker process (up to all of them)',
    })
    .option('fresh', { type: 'boolean', default: false, describe: 'run again experiments that already finished' })
    .option('report', { type: 'boolean', default: false, describe: 'run nothing: tabulate the runs whose summaries are kept (a study part-way done)' })
    .option('summaries', { type: 'string', default: 'docs/study', describe: "where each finished run's summary is kept (committed): runs found there are not run again" })
    .strict()
    .parse();
  if (!Number.isInteger(args.seeds) || args.seeds < 1) throw new CohortError(`--seeds must be a positive integer, got ${args.seeds}`, { code: 'USAGE' });
  if (args.epochs !== undefined && (!Number.isInteger(args.epochs) || args.epochs < 1))
    throw new CohortError(`--epochs must be a positive integer, got ${args.epochs}`, { code: 'USAGE' });
  if (!Number.isInteger(args.parallel) || args.parallel < 1) throw new CohortError(`--parallel must be a positive integer, got ${args.parallel}`, { code: 'USAGE' });
  const configs = studyConfigs(args.only?.split(',').map((s) => s.trim()));
  // Every (experiment, seed) run, seed by seed and in config order within a seed, so that a
  // study stopped part-way leaves whole seeds: every claim's pair for the seeds done.
  const jobs: Job[] = Array.from({ length: args.seeds }, (_, i) => i + 1).flatMap((seed) =>
    configs.map(({ raw }) => {
      const overrides = { epochs: args.epochs, trainLimit: args['train-limit'] };
      const config = configFor(raw, seed, args.out, overrides);
      return {
        experiment: raw.name as string,
        seed,
        config,
        slots: Math.min(config.members.length + config.teachers.length, args.parallel),
        needs: config.teachers.length ? teacherRun(seed, overrides) : undefined,
      };
    }),
  );
  const started = Date.now();
  if (args.report && args.fresh) throw new CohortError('--report and --fresh exclude each other', { code: 'USAGE' });
  // --report: only the runs already done (their teachers' weights are not needed again).
  const toRun = args.report ? jobs.filter((j) => finished(j.config, args.summaries)) : jobs;
  // Teacher runs whose weights a run still to do will load.
  const needed = new Set(toRun.flatMap((j) => (j.needs && (args.fresh || !finished(j.config, args.summaries)) ? [j.needs] : [])));
  const outcomes = await schedule(toRun, args.parallel, (job) => runJob(job, args.fresh, args.summaries, needed));
  const results: Result[] = [];
  const runDirs: string[] = [];
  for (const job of jobs) {
    const outcome = outcomes.get(job.config.name);
    if (!outcome) continue;
    runDirs.push(runDirectory(job.config));
    const downscaled = new Set(job.config.members.filter((m) => m.downscale).map((m) => m.name));
    const order = [...job.config.members, ...job.config.teachers].map((w) => w.name);
    const rank = (e: EvalRecord) => (order.includes(e.worker) ? order.indexOf(e.worker) : order.length);
    for (const e of [...outcome.evals].sort((a, b) => rank(a) - rank(b))) {
      const over = accuracySummary(inOrder(outcome.all ?? outcome.evals, e.worker, outcome.stepsPerEpoch ?? 1));
      results.push({
        experiment: job.experiment,
        seed: job.seed,
        worker: e.worker,
        role: e.role,
        downscaled: downscaled.has(e.worker),
        accuracy: e.accuracy,
        best: over.best,
        fluctuation: over.fluctuation,
        jitter: over.jitter,
        evaluations: over.evaluations,
        ece: e.ece,
        ...(typeof e.trainEce === 'number' ? { trainEce: e.trainEce } : {}),
        nll: e.nll,
        overconfidence: overconfidence(e),
        seconds: outcome.seconds,
      });
    }
  }
  const minutes = (Date.now() - started) / 60_000;
  const total = [...outcomes.values()].reduce((a, o) => a + o.seconds, 0) / 60;
  const table = `${resultsTable(results)}\n\n${claimsTable(results)}`;
  const header = `# Fashion-MNIST study\n\n${args.report ? 'up to ' : ''}${args.seeds} seed(s), ${args.epochs ?? "the configs'"} epochs. This invocation took ${minutes.toFixed(1)} min of wall time, up to ${args.parallel} worker processes at once; the runs' own times add up to ${total.toFixed(1)} min (runs that shared the machine took longer than alone).\n\n`;
  mkdirSync(args.out, { recursive: true }); // every run may have been done before (summaries only)
  writeFileSync(join(args.out, 'results.md'), `${header}${table}\n`);
  console.log(`\n${table}\n\nstudy: results in ${join(args.out, 'results.md')}`);
  try {
    const { writeReport } = await import('../../report/index.js');
    const report = await writeReport(runDirs, join(args.out, 'report.html'));
    console.log(`study: report in ${report.outPath}`);
  } catch (error) {
    console.error(`study: no HTML report: ${(error as Error).message}`);
  }
}

main().catch((error: unknown) => {
  console.error(`study: error: ${error instanceof CohortError ? error.message : (error as Error).stack}`);
  process.exit(2);
});

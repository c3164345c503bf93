/**
 * `npm run bench -- exchange`: the coordinator's per-step exchange time on loopback (every
 * member's predictions in, every member's teaching signal out) for cohorts of K DML members, beside
 * the time raw ZeroMQ needs to move the same bytes, measured side by side in one run, and the
 * overhead as a share of one training step of the reference CNN (batch 128, wasm).
 *
 * Two processes, as in a real run: this one hosts the coordinators, the member process
 * (bench/exchange-members.ts, one per configuration) hosts K synthetic members. Cohort path:
 * the real `runCoordinator` (DML, temperature 1) here, and K WorkerSockets there that join as
 * run-worker.ts does and each send a `predictions` message per step. Raw path: a plain zeromq
 * Router here that gathers K messages (the coordinator's barrier) and answers each with frames
 * of the teaching message's sizes, and K plain Dealers there sending frames of the predictions
 * message's sizes. A third path, raw ZeroMQ with the received bytes read once, is the same but
 * its Router reads every frame it receives once (a sum over its values) before answering, as
 * any process that uses the bytes must: on machines where the first read of freshly received
 * memory is expensive (this VM: about 1.8 ms per MiB, with no page faults), that read is a
 * cost of delivering the bytes that the bare Router never pays. The member process takes the
 * three paths in turn, step by step, and times each step the same way: from just before the
 * first member's send to the moment the last member has received its answer. So the times
 * include the same member-side socket work and differ only by what answers: the coordinator's
 * decoding, checking, summing, leave-one-out means, encoding and sending, or a Router. The
 * ratio to raw ZeroMQ is taken per step (the three paths of a step run back to back) and its
 * median over the steps is judged against the target, since the machine's slow spells move
 * whole stretches of steps; the ratio of the medians is reported beside. Each
 * member's own encoding and decoding, which a worker does in its own process in parallel with
 * the others, is timed apart (outside the clock) and reported beside. Both processes run with
 * the garbage-collector setting every Cohort process that streams tensors gets from its sockets
 * (shared/protocol/gc-tuning.ts), so the raw paths share it. `--sleep-ms` sleeps before every
 * step (synthetic compute, all K members at once), so K = 16 fits on 2 cores. The
 * coordinator's teaching computation alone (PredictionSums on the same predictions, as the
 * coordinator uses it) is also timed apart here.
 */
import { spawn } from 'node:child_process';
import { runChildJson } from './child-json.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Router } from 'zeromq';
import { runCoordinator, type RunSummary } from '../coordinator/run-coordinator.js';
import { PredictionSums } from '../coordinator/teaching.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { bytesOf, syntheticProbs, wireFrames, type MembersResult, type MembersSpec } from './exchange-wire.js';
import { median, percentile } from './stats.js';

export interface ExchangeBenchOptions {
  /** Cohort sizes K (each >= 2). */
  sizes: number[];
  /** Logits shapes [batch, classes]. */
  shapes: [number, number][];
  /** Timed steps per configuration and path, for up to 1 MiB of logits per step. */
  steps: number;
  /** Timed steps for configurations moving over 1 MiB of logits per step (K x batch x classes x 4 bytes). */
  bigSteps: number;
  warmup: number;
  /** Synthetic compute: the members sleep this long before every step (all K at once, in their process). */
  sleepMs: number;
  /** The reference CNN's step time; measured (wasm, batch 128) when absent. */
  stepMs?: number;
  /** Timed steps for measuring the reference CNN. */
  cnnSteps: number;
}

export interface ExchangeRow {
  members: number;
  batch: number;
  classes: number;
  steps: number;
  /** Bytes moved per step, both ways, all members. */
  bytesPerStep: number;
  cohortMs: number;
  cohortP90Ms: number;
  rawMs: number;
  rawP90Ms: number;
  /**
   * The median over timed steps of cohort / raw for the same step: the paths of a step run back
   * to back, so a slow spell of the machine (on this VM the raw median of 30-step windows moves
   * from 3 to 21 ms within one run) weighs on both sides of each ratio. The target is judged on it.
   */
  pairedRatio: number;
  /** cohortMs / rawMs: the ratio of the medians, reported beside (it moves with those spells). */
  ratio: number;
  /** Raw ZeroMQ whose Router reads every frame it receives once. */
  rawReadMs: number;
  rawReadP90Ms: number;
  /** The median per-step ratio of cohort / (raw + read). */
  pairedRatioRead: number;
  /** Median time of the coordinator's teaching computation alone (sums and leave-one-out means, as it runs them), timed apart. */
  teachingMs: number;
  /** One member's median encode (predictions) plus decode (teaching) time, in its own process, outside the timed exchange. */
  memberCodecMs: number;
  /** cohortMs as a percentage of the reference CNN step (batch-128, 10-class rows only). */
  stepPercent?: number;
  /** Every timed step, in order (ms), for the JSON output. */
  times: { cohort: number[]; raw: number[]; rawRead: number[] };
}

export interface ExchangeResult {
  date: string;
  host: string;
  sleepMs: number;
  warmup: number;
  step: { ms?: number; source: 'measured' | 'given' | 'unavailable'; backend?: string; device?: string; note?: string };
  rows: ExchangeRow[];
  targets: {
    /** The issue's target: cohort within 2x of raw ZeroMQ, per-step ratios (pairedRatio). */
    ratio: RatioTarget;
    /** The same limit on the ratio of the medians (reported beside). */
    ratioOfMedians: RatioTarget;
    /** The same limit against raw ZeroMQ with the received bytes read once (per-step ratios; reported beside). */
    ratioRead: RatioTarget;
    stepShare: { limitPercent: number; members: number; shape: string; percent?: number; met?: boolean };
  };
  wallSeconds: number;
}

export interface RatioTarget {
  limit: number;
  met: boolean;
  failing: string[];
}

const RATIO_TARGET = 2;
const SHARE_TARGET_PERCENT = 2;
const BIG_BYTES = 2 ** 20;
const stepWorkerPath = fileURLToPath(new URL('./step-worker.ts', import.meta.url));
const membersPath = fileURLToPath(new URL('./exchange-members.ts', import.meta.url));

/** The real coordinator (DML, K members, temperature 1), listening on a free loopback port. */
async function startCoordinator(members: number, batch: number): Promise<{ endpoint: string; result: Promise<RunSummary>; stop: () => Promise<void> }> {
  const runDir = mkdtempSync(join(tmpdir(), 'cohort-bench-exchange-'));
  const config = resolveRunConfig({
    name: 'bench-exchange',
    algorithm: 'dml',
    temperature: 1,
    batchSize: batch,
    dataset: { name: 'fashion-mnist' },
    members: Array.from({ length: members }, (_, i) => ({ name: `m${i}`, model: { name: 'cnn-student' } })),
    runDir,
  });
  const abort = new AbortController();
  let listening!: (endpoint: string) => void;
  const endpoint = new Promise<string>((resolve) => (listening = resolve));
  const result = runCoordinator({ config, bind: 'tcp://127.0.0.1:*', onListening: listening, signal: abort.signal, log: () => {}, logEvery: 1e9 });
  result.catch(() => {});
  const stop = async () => {
    abort.abort(new CohortError('bench stopped', { code: 'ABORTED' }));
    await result.catch(() => {});
    rmSync(runDir, { recursive: true, force: true });
  };
  try {
    const address = await Promise.race([
      endpoint,
      result.then(() => {
        throw new CohortError('the coordinator ended before it was listening', { code: 'INTERNAL' });
      }),
    ]);
    return { endpoint: address, result, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** One read of every byte received: a sum over each frame, as float32 words where aligned, else bytes. */
function readOnce(frames: Buffer[]): number {
  let sum = 0;
  for (const f of frames) {
    const words = f.byteOffset % 4 === 0 ? new Float32Array(f.buffer, f.byteOffset, f.byteLength >> 2) : undefined;
    if (words) for (let k = 0; k < words.length; k++) sum += words[k];
    for (let k = words ? 4 * words.length : 0; k < f.byteLength; k++) sum += f[k];
  }
  return sum;
}

/**
 * Plain zeromq in the coordinator's place: gathers one message from each of K dealers, then
 * answers the j-th with `downs[j]` (K distinct buffers, as the coordinator sends each member
 * its own teaching signal: one buffer sent K times would stay in the CPU cache and flatter raw
 * ZeroMQ). With `read`, it first reads every frame it receives once.
 */
class RawRouter {
  private readonly router = new Router({ linger: 0 });
  private serving: Promise<void> = Promise.resolve();
  /** Keeps the reads from being optimised away. */
  checksum = 0;

  constructor(private readonly read: boolean) {}

  async open(members: number, downs: Buffer[][]): Promise<string> {
    await this.router.bind('tcp://127.0.0.1:*');
    this.serving = (async () => {
      for (;;) {
        const peers: Buffer[] = [];
        while (peers.length < members) {
          const [peer, ...frames] = await this.router.receive();
          if (this.read) this.checksum += readOnce(frames);
          peers.push(peer);
        }
        for (const [j, peer] of peers.entries()) await this.router.send([peer, ...downs[j]]);
      }
    })().catch((error) => {
      if (!this.router.closed) throw error;
    });
    return this.router.lastEndpoint!;
  }

  async close(): Promise<void> {
    this.router.close();
    await this.serving;
  }
}

/**
 * The coordinator's teaching computation alone, as it runs it: each member's predictions added
 * to reused sums, then each leave-one-out mean written over that member's predictions.
 */
function timeTeaching(members: number, batch: number, classes: number, repeats: number): number[] {
  const probs = Array.from({ length: members }, (_, i) => syntheticProbs(batch, classes, i));
  const work = probs.map((p) => p.slice());
  const times: number[] = [];
  const sums = new PredictionSums(batch * classes);
  for (let i = 0; i < repeats; i++) {
    work.forEach((w, j) => w.set(probs[j]));
    const start = performance.now();
    sums.reset();
    for (const w of work) sums.add(w, -1);
    for (const w of work) sums.leaveOneOut(w, -1, w);
    times.push(performance.now() - start);
  }
  return times;
}

/** Runs the member process to its end; resolves with what it reported. */
function runMembers(spec: MembersSpec): Promise<MembersResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', membersPath, JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    let stderr = '';
    let result: MembersResult | undefined;
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
    child.on('message', (message) => (result = message as MembersResult));
    child.on('error', (error) => reject(new CohortError(`cannot start the bench member process: ${error.message}`, { code: 'LAUNCH_FAILED', cause: error })));
    child.on('exit', (code, signal) => {
      if (code === 0 && result) resolve(result);
      else
        reject(
          new CohortError(
            `the bench member process (K = ${spec.members}, ${spec.batch}x${spec.classes}) failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').slice(-3).join(' | ') || 'no message'}`,
            { code: 'WORKER_FAILED' },
          ),
        );
    });
  });
}

async function measureConfig(members: number, batch: number, classes: number, o: ExchangeBenchOptions): Promise<ExchangeRow> {
  const { up, down } = wireFrames(batch, classes);
  const steps = members * batch * classes * 4 > BIG_BYTES ? Math.min(o.steps, o.bigSteps) : o.steps;
  const raw = new RawRouter(false);
  const rawRead = new RawRouter(true);
  const coordinator = await startCoordinator(members, batch);
  try {
    const downs = () => Array.from({ length: members }, () => wireFrames(batch, classes).down);
    const [rawEndpoint, rawReadEndpoint] = [await raw.open(members, downs()), await rawRead.open(members, downs())];
    const times = await runMembers({
      cohort: coordinator.endpoint,
      raw: rawEndpoint,
      rawRead: rawReadEndpoint,
      members,
      batch,
      classes,
      steps,
      warmup: o.warmup,
      sleepMs: o.sleepMs,
    });
    const summary = await coordinator.result;
    if (summary.steps !== o.warmup + steps) throw new CohortError(`the coordinator served ${summary.steps} steps, expected ${o.warmup + steps}`, { code: 'INTERNAL' });
    const teaching = timeTeaching(members, batch, classes, Math.min(steps, 20));
    const cohortMs = median(times.cohort);
    const rawMs = median(times.raw);
    const rawReadMs = median(times.rawRead);
    const perStep = (other: number[]) => median(times.cohort.map((ms, i) => ms / other[i]));
    return {
      members,
      batch,
      classes,
      steps,
      bytesPerStep: members * (bytesOf(up) + bytesOf(down)),
      cohortMs,
      cohortP90Ms: percentile(times.cohort, 90),
      rawMs,
      rawP90Ms: percentile(times.raw, 90),
      pairedRatio: perStep(times.raw),
      ratio: cohortMs / rawMs,
      rawReadMs,
      rawReadP90Ms: percentile(times.rawRead, 90),
      pairedRatioRead: perStep(times.rawRead),
      teachingMs: median(teaching),
      memberCodecMs: times.encodeMs + times.decodeMs,
      times: { cohort: times.cohort, raw: times.raw, rawRead: times.rawRead },
    };
  } finally {
    await coordinator.stop();
    await raw.close();
    await rawRead.close();
  }
}

/** One training step of the reference CNN (batch 128, wasm), timed in its own process by step-worker.ts. */
function measureStep(steps: number): ExchangeResult['step'] {
  const result = runChildJson<{ backend: string; device: string; msPerStep?: number; unavailable?: string }>(process.execPath, [
    '--import',
    'tsx',
    stepWorkerPath,
    '--backend=wasm',
    `--steps=${steps}`,
    '--warmup=2',
  ]);
  if ('failed' in result) return { source: 'unavailable', note: `the reference CNN step could not be timed: ${result.failed}` };
  const r = result.value;
  if (r.msPerStep === undefined) return { source: 'unavailable', note: r.unavailable };
  return { ms: r.msPerStep, source: 'measured', backend: r.backend, device: r.device };
}

const shapeText = (batch: number, classes: number) => `${batch}x${classes}`;

/** Parses `128x10,256x1000`. */
export function parseShapes(text: string): [number, number][] {
  return text.split(',').map((s) => {
    const match = /^\s*(\d+)\s*x\s*(\d+)\s*$/.exec(s);
    if (!match || Number(match[1]) < 1 || Number(match[2]) < 2) throw new CohortError(`--shapes: '${s.trim()}' is not BATCHxCLASSES (e.g. 128x10)`, { code: 'USAGE' });
    return [Number(match[1]), Number(match[2])];
  });
}

function checkOptions(o: ExchangeBenchOptions): void {
  const bad = o.sizes.filter((k) => !Number.isInteger(k) || k < 2 || k > 256);
  if (bad.length) throw new CohortError(`--sizes: cohort sizes must be integers from 2 to 256, got ${bad.join(', ')}`, { code: 'USAGE' });
  for (const [name, value, min] of [
    ['--steps', o.steps, 1],
    ['--big-steps', o.bigSteps, 1],
    ['--warmup', o.warmup, 0],
    ['--cnn-steps', o.cnnSteps, 1],
  ] as const) {
    if (!Number.isInteger(value) || value < min) throw new CohortError(`${name} must be an integer >= ${min}, got ${value}`, { code: 'USAGE' });
  }
  if (!(o.sleepMs >= 0)) throw new CohortError(`--sleep-ms must be >= 0, got ${o.sleepMs}`, { code: 'USAGE' });
  if (o.stepMs !== undefined && !(o.stepMs > 0)) throw new CohortError(`--step-ms must be > 0, got ${o.stepMs}`, { code: 'USAGE' });
}

export async function benchExchange(o: ExchangeBenchOptions, print: (line: string) => void): Promise<ExchangeResult> {
  checkOptions(o);
  const started = performance.now();
  print(
    `exchange benchmark: DML cohorts of K = ${o.sizes.join(', ')}, logits ${o.shapes.map(([b, c]) => shapeText(b, c)).join(' and ')}, ` +
      `${o.steps} timed steps (${o.bigSteps} over ${BIG_BYTES / 2 ** 20} MiB of logits per step) after ${o.warmup} warm-up, sleep ${o.sleepMs} ms; cohort, raw ZeroMQ and raw ZeroMQ with the received bytes read once take turns step by step`,
  );
  const step: ExchangeResult['step'] = o.stepMs !== undefined ? { ms: o.stepMs, source: 'given' } : measureStep(o.cnnSteps);
  print(
    step.ms !== undefined
      ? `  reference CNN step (batch 128): ${step.ms.toFixed(1)} ms (${step.source === 'given' ? '--step-ms' : `${step.backend}, ${step.device}, median of ${o.cnnSteps}`})`
      : `  reference CNN step: ${step.note}`,
  );
  const rows: ExchangeRow[] = [];
  for (const [batch, classes] of o.shapes) {
    for (const members of o.sizes) {
      const row = await measureConfig(members, batch, classes, o);
      if (step.ms !== undefined && batch === 128 && classes === 10) row.stepPercent = (100 * row.cohortMs) / step.ms;
      rows.push(row);
      print(
        `  K=${members} ${shapeText(batch, classes)}: cohort ${row.cohortMs.toFixed(3)} ms, raw ZeroMQ ${row.rawMs.toFixed(3)} ms (x${row.pairedRatio.toFixed(2)} per step, x${row.ratio.toFixed(2)} of the medians), raw ZeroMQ + read ${row.rawReadMs.toFixed(3)} ms (x${row.pairedRatioRead.toFixed(2)} per step), teaching compute ${row.teachingMs.toFixed(3)} ms, member encode+decode ${row.memberCodecMs.toFixed(3)} ms`,
      );
    }
  }
  const ratioTarget = (ratio: (r: ExchangeRow) => number): RatioTarget => {
    const failing = rows.filter((r) => ratio(r) > RATIO_TARGET).map((r) => `K=${r.members} ${shapeText(r.batch, r.classes)}`);
    return { limit: RATIO_TARGET, met: failing.length === 0, failing };
  };
  const share = rows.find((r) => r.members === 4 && r.batch === 128 && r.classes === 10);
  const result: ExchangeResult = {
    date: new Date().toISOString(),
    host: hostname(),
    sleepMs: o.sleepMs,
    warmup: o.warmup,
    step,
    rows,
    targets: {
      ratio: ratioTarget((r) => r.pairedRatio),
      ratioOfMedians: ratioTarget((r) => r.ratio),
      ratioRead: ratioTarget((r) => r.pairedRatioRead),
      stepShare: {
        limitPercent: SHARE_TARGET_PERCENT,
        members: 4,
        shape: '128x10',
        percent: share?.stepPercent,
        met: share?.stepPercent === undefined ? undefined : share.stepPercent < SHARE_TARGET_PERCENT,
      },
    },
    wallSeconds: 0,
  };
  printTable(result, print);
  result.wallSeconds = (performance.now() - started) / 1000;
  print(`\ntotal wall time ${result.wallSeconds.toFixed(1)} s`);
  return result;
}

function printTable(r: ExchangeResult, print: (line: string) => void): void {
  const ms = (v: number) => (v < 10 ? v.toFixed(3) : v.toFixed(1));
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(2);
  print('');
  print(
    '| K | logits | MiB/step (in+out) | timed steps | cohort ms (median) | cohort ms (p90) | raw ZeroMQ ms (median) | raw ZeroMQ ms (p90) | cohort / raw (per step) | cohort / raw (medians) | raw + read ms (median) | cohort / (raw + read) (per step) | teaching compute ms | member encode+decode ms | % of CNN step |',
  );
  print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const row of r.rows) {
    const pct = row.stepPercent === undefined ? '-' : `${row.stepPercent.toFixed(2)}%`;
    print(
      `| ${row.members} | ${shapeText(row.batch, row.classes)} | ${mib(row.bytesPerStep)} | ${row.steps} | ${ms(row.cohortMs)} | ${ms(row.cohortP90Ms)} | ${ms(row.rawMs)} | ${ms(row.rawP90Ms)} | ${row.pairedRatio.toFixed(2)} | ${row.ratio.toFixed(2)} | ${ms(row.rawReadMs)} | ${row.pairedRatioRead.toFixed(2)} | ${ms(row.teachingMs)} | ${ms(row.memberCodecMs)} | ${pct} |`,
    );
  }
  const { ratio, ratioOfMedians, ratioRead, stepShare } = r.targets;
  const verdict = (t: RatioTarget) => (t.met ? 'met for every row' : `NOT met for ${t.failing.join(', ')}`);
  print('');
  print(`target: cohort within ${ratio.limit}x of raw ZeroMQ (median of the per-step ratios): ${verdict(ratio)}`);
  print(`beside: the same on the ratio of the medians: ${verdict(ratioOfMedians)}`);
  print(`beside: cohort within ${ratioRead.limit}x of raw ZeroMQ with the received bytes read once (per step): ${verdict(ratioRead)}`);
  print(
    stepShare.percent === undefined
      ? `target: under ${stepShare.limitPercent}% of the reference CNN step at K = 4, 128x10: not measured (${r.rows.some((x) => x.members === 4 && x.batch === 128 && x.classes === 10) ? 'no step time' : 'K = 4 at 128x10 not in this run'})`
      : `target: under ${stepShare.limitPercent}% of the reference CNN step at K = 4, 128x10: ${stepShare.met ? 'met' : 'NOT met'} (${stepShare.percent.toFixed(2)}% of ${r.step.ms!.toFixed(1)} ms)`,
  );
}

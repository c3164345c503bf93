/**
 * `npm run bench -- exchange`: the coordinator's per-step exchange time on loopback (every
 * member's predictions in, every member's teaching signal out) for cohorts of K DML members, beside
 * the time raw ZeroMQ needs to move the same bytes, measured side by side in one run, and the
 * overhead as a share of one training step of the reference CNN (batch 128, wasm).
 *
 * Cohort path: the real `runCoordinator` and K synthetic workers (WorkerSocket, no tfjs, no
 * data) in this process; each joins as run-worker.ts does, then per step all K send a
 * `predictions` message at once (same indices, random probabilities: workers send softmax(z/T)
 * computed on their own backend) and the clock stops when all K hold their `teaching`. Raw
 * path: a plain zeromq Router and K Dealers; per step each dealer sends frames of the
 * predictions message's sizes, the router gathers all K (the coordinator's barrier) and
 * answers each with frames of the teaching message's sizes. The two paths alternate step by
 * step. `--sleep-ms` adds a fixed sleep before every step (synthetic compute), as workers
 * would spend it training. The coordinator's teaching computation (leaveOneOutTeaching) is
 * also timed apart on the same predictions, to show how much of the exchange it is.
 * Everything shares one Node thread, so the cohort time also holds the K workers' encoding and
 * decoding, which separate worker processes would do in parallel (about 10 us per member).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Dealer, Router } from 'zeromq';
import { runCoordinator } from '../coordinator/run-coordinator.js';
import { leaveOneOutTeaching } from '../coordinator/teaching.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { CohortError } from '../shared/errors.js';
import { encodeMessage } from '../shared/protocol/codec.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { WorkerSocket } from '../shared/protocol/sockets.js';
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
  /** Fixed sleep before every step (synthetic compute). */
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
  /** cohortMs / rawMs. */
  ratio: number;
  /** Median time of the coordinator's teaching computation alone (leaveOneOutTeaching), timed apart. */
  teachingMs: number;
  /** cohortMs as a percentage of the reference CNN step (batch-128, 10-class rows only). */
  stepPercent?: number;
}

export interface ExchangeResult {
  date: string;
  host: string;
  sleepMs: number;
  warmup: number;
  step: { ms?: number; source: 'measured' | 'given' | 'unavailable'; backend?: string; device?: string; note?: string };
  rows: ExchangeRow[];
  targets: {
    ratio: { limit: number; met: boolean; failing: string[] };
    stepShare: { limitPercent: number; members: number; shape: string; percent?: number; met?: boolean };
  };
  wallSeconds: number;
}

const RATIO_TARGET = 2;
const SHARE_TARGET_PERCENT = 2;
const BIG_BYTES = 2 ** 20;
const MESSAGE_TIMEOUT_MS = 30_000;
const stepWorkerPath = fileURLToPath(new URL('./step-worker.ts', import.meta.url));

/** One cohort member without a model: joins, exchanges fixed random predictions, says done. */
class SyntheticWorker {
  readonly socket: WorkerSocket;
  readonly logits: Float32Array;

  constructor(readonly member: string, endpoint: string, private readonly batch: number, private readonly classes: number, seed: number) {
    this.socket = new WorkerSocket(member);
    this.socket.connect(endpoint);
    const random = mulberry32(seed);
    // Probabilities (rows summing to 1), as a worker sends them after its softmax.
    this.logits = new Float32Array(batch * classes);
    for (let k = 0; k < this.logits.length; k++) this.logits[k] = random();
    for (let r = 0; r < batch; r++) {
      const row = this.logits.subarray(r * classes, (r + 1) * classes);
      const sum = row.reduce((a, b) => a + b, 0);
      for (let c = 0; c < classes; c++) row[c] /= sum;
    }
  }

  async join(): Promise<void> {
    await this.socket.send({ type: 'join', protocolVersion: PROTOCOL_VERSION, member: this.member, role: 'member', backend: 'synthetic', device: '', pid: process.pid, host: hostname() });
    const answer = await this.next('a welcome');
    if (answer.type !== 'welcome') throw new CohortError(`bench worker ${this.member}: expected a welcome, got ${answer.type}`);
  }

  /** Sends this step's predictions and waits for the teaching signal of the same step. */
  async exchange(step: number, indices: Uint32Array): Promise<void> {
    await this.socket.send({
      type: 'predictions', step, epoch: 0, batch: step,
      indices: { dtype: 'uint32', shape: [this.batch], data: indices },
      probs: { dtype: 'float32', shape: [this.batch, this.classes], data: this.logits },
      negEntropy: -1,
      loss: 1,
      generation: 0,
    });
    const message = await this.next(`the teaching signal of step ${step}`);
    if (message.type !== 'teaching' || message.step !== step || message.teaching.data.length !== this.logits.length) {
      throw new CohortError(`bench worker ${this.member}: expected the teaching signal of step ${step}, got ${message.type}${message.type === 'teaching' ? ` of step ${message.step}` : ''}`);
    }
  }

  async finish(): Promise<void> {
    await this.socket.send({ type: 'done', member: this.member, generation: 0 });
    const message = await this.next('the shutdown');
    if (message.type !== 'shutdown') throw new CohortError(`bench worker ${this.member}: expected shutdown, got ${message.type}`);
  }

  /** The coordinator's next message other than a heartbeat; a reject or error fails the bench. */
  private async next(what: string): Promise<Message> {
    for (;;) {
      let message: Message;
      try {
        message = await this.socket.receive(MESSAGE_TIMEOUT_MS);
      } catch (error) {
        throw error instanceof CohortError ? new CohortError(`bench worker ${this.member}, waiting for ${what}: ${error.message}`) : error;
      }
      if (message.type === 'heartbeat') continue;
      if (message.type === 'reject') throw new CohortError(`the coordinator refused bench worker ${this.member}: ${message.reason}`);
      if (message.type === 'error') throw new CohortError(`the coordinator failed: ${message.message}`);
      if (message.type === 'shutdown' && what !== 'the shutdown') throw new CohortError(`the coordinator stopped the run: ${message.reason}`);
      return message;
    }
  }
}

/** The real coordinator (DML, K members, temperature 1) and K synthetic workers, joined. */
class CohortPath {
  private constructor(
    private readonly workers: SyntheticWorker[],
    private readonly result: Promise<unknown>,
    private readonly abort: AbortController,
    private readonly runDir: string,
    private readonly batch: number,
  ) {}

  static async open(members: number, batch: number, classes: number): Promise<CohortPath> {
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
    const address = await Promise.race([endpoint, result.then(() => { throw new CohortError('the coordinator ended before it was listening'); })]);
    const workers = Array.from({ length: members }, (_, i) => new SyntheticWorker(`m${i}`, address, batch, classes, 1000 + i));
    const path = new CohortPath(workers, result, abort, runDir, batch);
    try {
      await Promise.all(workers.map((w) => w.join()));
    } catch (error) {
      await path.close();
      throw error;
    }
    return path;
  }

  get logits(): Float32Array[] {
    return this.workers.map((w) => w.logits);
  }

  /** One step: all members send at once; ms until every member holds its teaching signal. */
  async step(step: number): Promise<number> {
    const indices = new Uint32Array(this.batch);
    for (let r = 0; r < this.batch; r++) indices[r] = (step * this.batch + r) % 60_000;
    const start = performance.now();
    await Promise.all(this.workers.map((w) => w.exchange(step, indices)));
    return performance.now() - start;
  }

  /** Every worker says done; the coordinator shuts the run down and must report `steps` steps served. */
  async finish(steps: number): Promise<void> {
    try {
      await Promise.all(this.workers.map((w) => w.finish()));
      const summary = (await this.result) as { steps: number };
      if (summary.steps !== steps) throw new CohortError(`the coordinator served ${summary.steps} steps, expected ${steps}`);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    this.abort.abort(new CohortError('bench stopped'));
    await this.result.catch(() => {});
    for (const w of this.workers) w.socket.close();
    rmSync(this.runDir, { recursive: true, force: true });
  }
}

/** Plain zeromq: a Router and K Dealers moving frames of the cohort messages' sizes. */
class RawPath {
  private constructor(private readonly router: Router, private readonly dealers: Dealer[], private readonly up: Buffer[], private readonly down: Buffer[]) {}

  static async open(members: number, up: Buffer[], down: Buffer[]): Promise<RawPath> {
    const router = new Router({ linger: 0 });
    await router.bind('tcp://127.0.0.1:*');
    const dealers = Array.from({ length: members }, (_, i) => {
      const dealer = new Dealer({ linger: 0, routingId: `r${i}` });
      dealer.connect(router.lastEndpoint!);
      return dealer;
    });
    return new RawPath(router, dealers, up, down);
  }

  /** One step: all dealers send, the router gathers all K then answers each; ms until all K have their answer. */
  async step(): Promise<number> {
    const start = performance.now();
    const serve = (async () => {
      const peers: Buffer[] = [];
      for (let i = 0; i < this.dealers.length; i++) peers.push((await this.router.receive())[0]);
      for (const peer of peers) await this.router.send([peer, ...this.down]);
    })();
    await Promise.all([serve, ...this.dealers.map(async (d) => { await d.send(this.up); await d.receive(); })]);
    return performance.now() - start;
  }

  close(): void {
    for (const d of this.dealers) d.close();
    this.router.close();
  }
}

/** The frames of one member's predictions message and of one teaching message, as the codec writes them. */
function wireFrames(batch: number, classes: number): { up: Buffer[]; down: Buffer[] } {
  const up = encodeMessage({
    type: 'predictions', step: 0, epoch: 0, batch: 0,
    indices: { dtype: 'uint32', shape: [batch], data: new Uint32Array(batch) },
    probs: { dtype: 'float32', shape: [batch, classes], data: new Float32Array(batch * classes) },
    negEntropy: -1, loss: 1, generation: 0,
  });
  const down = encodeMessage({
    type: 'teaching', step: 0, teaching: { dtype: 'float32', shape: [batch, classes], data: new Float32Array(batch * classes) },
    peerNegEntropy: -1, peerCount: 1, generation: 0,
  });
  // Own copies: the raw path must not share memory with anything else.
  return { up: up.map((f) => Buffer.from(f)), down: down.map((f) => Buffer.from(f)) };
}

const bytesOf = (frames: Buffer[]) => frames.reduce((sum, f) => sum + f.byteLength, 0);

async function measureConfig(members: number, batch: number, classes: number, o: ExchangeBenchOptions): Promise<ExchangeRow> {
  const { up, down } = wireFrames(batch, classes);
  const steps = members * batch * classes * 4 > BIG_BYTES ? Math.min(o.steps, o.bigSteps) : o.steps;
  const raw = await RawPath.open(members, up, down);
  let cohort: CohortPath | undefined;
  const times = { cohort: [] as number[], raw: [] as number[] };
  try {
    cohort = await CohortPath.open(members, batch, classes);
    for (let i = 0; i < o.warmup + steps; i++) {
      for (const path of i % 2 === 0 ? (['cohort', 'raw'] as const) : (['raw', 'cohort'] as const)) {
        if (o.sleepMs > 0) await sleep(o.sleepMs);
        const ms = path === 'cohort' ? await cohort.step(i) : await raw.step();
        if (i >= o.warmup) times[path].push(ms);
      }
    }
    const logits = cohort.logits;
    await cohort.finish(o.warmup + steps);
    cohort = undefined;
    const teaching: number[] = [];
    for (let i = 0; i < Math.min(steps, 20); i++) {
      const start = performance.now();
      leaveOneOutTeaching(logits, logits.map(() => -1));
      teaching.push(performance.now() - start);
    }
    const cohortMs = median(times.cohort);
    const rawMs = median(times.raw);
    return {
      members, batch, classes, steps,
      bytesPerStep: members * (bytesOf(up) + bytesOf(down)),
      cohortMs, cohortP90Ms: percentile(times.cohort, 90), rawMs, rawP90Ms: percentile(times.raw, 90),
      ratio: cohortMs / rawMs,
      teachingMs: median(teaching),
    };
  } finally {
    await cohort?.close();
    raw.close();
  }
}

/** One training step of the reference CNN (batch 128, wasm), timed in its own process by step-worker.ts. */
function measureStep(steps: number): ExchangeResult['step'] {
  const child = spawnSync(process.execPath, ['--import', 'tsx', stepWorkerPath, '--backend=wasm', `--steps=${steps}`, '--warmup=2'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const line = child.stdout.split('\n').reverse().find((l) => l.startsWith('{'));
  if (child.status !== 0 || !line) {
    const reason = (child.stderr || child.stdout).trim().split('\n').filter((l) => l.length < 400).slice(-3).join(' | ');
    return { source: 'unavailable', note: `the reference CNN step could not be timed (exit ${child.status}): ${reason}` };
  }
  const r = JSON.parse(line) as { backend: string; device: string; msPerStep?: number; unavailable?: string };
  if (r.msPerStep === undefined) return { source: 'unavailable', note: r.unavailable };
  return { ms: r.msPerStep, source: 'measured', backend: r.backend, device: r.device };
}

const shapeText = (batch: number, classes: number) => `${batch}x${classes}`;

/** Parses `128x10,256x1000`. */
export function parseShapes(text: string): [number, number][] {
  return text.split(',').map((s) => {
    const match = /^\s*(\d+)\s*x\s*(\d+)\s*$/.exec(s);
    if (!match || Number(match[1]) < 1 || Number(match[2]) < 2) throw new CohortError(`--shapes: '${s.trim()}' is not BATCHxCLASSES (e.g. 128x10)`);
    return [Number(match[1]), Number(match[2])];
  });
}

function checkOptions(o: ExchangeBenchOptions): void {
  const bad = o.sizes.filter((k) => !Number.isInteger(k) || k < 2 || k > 256);
  if (bad.length) throw new CohortError(`--sizes: cohort sizes must be integers from 2 to 256, got ${bad.join(', ')}`);
  for (const [name, value, min] of [['--steps', o.steps, 1], ['--big-steps', o.bigSteps, 1], ['--warmup', o.warmup, 0], ['--cnn-steps', o.cnnSteps, 1]] as const) {
    if (!Number.isInteger(value) || value < min) throw new CohortError(`${name} must be an integer >= ${min}, got ${value}`);
  }
  if (!(o.sleepMs >= 0)) throw new CohortError(`--sleep-ms must be >= 0, got ${o.sleepMs}`);
  if (o.stepMs !== undefined && !(o.stepMs > 0)) throw new CohortError(`--step-ms must be > 0, got ${o.stepMs}`);
}

export async function benchExchange(o: ExchangeBenchOptions, print: (line: string) => void): Promise<ExchangeResult> {
  checkOptions(o);
  const started = performance.now();
  print(`exchange benchmark: DML cohorts of K = ${o.sizes.join(', ')}, logits ${o.shapes.map(([b, c]) => shapeText(b, c)).join(' and ')}, ` +
    `${o.steps} timed steps (${o.bigSteps} over ${BIG_BYTES / 2 ** 20} MiB of logits per step) after ${o.warmup} warm-up, sleep ${o.sleepMs} ms; cohort and raw ZeroMQ alternate step by step`);
  const step: ExchangeResult['step'] = o.stepMs !== undefined ? { ms: o.stepMs, source: 'given' } : measureStep(o.cnnSteps);
  print(step.ms !== undefined
    ? `  reference CNN step (batch 128): ${step.ms.toFixed(1)} ms (${step.source === 'given' ? '--step-ms' : `${step.backend}, ${step.device}, median of ${o.cnnSteps}`})`
    : `  reference CNN step: ${step.note}`);
  const rows: ExchangeRow[] = [];
  for (const [batch, classes] of o.shapes) {
    for (const members of o.sizes) {
      const row = await measureConfig(members, batch, classes, o);
      if (step.ms !== undefined && batch === 128 && classes === 10) row.stepPercent = (100 * row.cohortMs) / step.ms;
      rows.push(row);
      print(`  K=${members} ${shapeText(batch, classes)}: cohort ${row.cohortMs.toFixed(3)} ms, raw ZeroMQ ${row.rawMs.toFixed(3)} ms (x${row.ratio.toFixed(2)}), teaching compute ${row.teachingMs.toFixed(3)} ms`);
    }
  }
  const failing = rows.filter((r) => r.ratio > RATIO_TARGET).map((r) => `K=${r.members} ${shapeText(r.batch, r.classes)}`);
  const share = rows.find((r) => r.members === 4 && r.batch === 128 && r.classes === 10);
  const result: ExchangeResult = {
    date: new Date().toISOString(),
    host: hostname(),
    sleepMs: o.sleepMs,
    warmup: o.warmup,
    step,
    rows,
    targets: {
      ratio: { limit: RATIO_TARGET, met: failing.length === 0, failing },
      stepShare: { limitPercent: SHARE_TARGET_PERCENT, members: 4, shape: '128x10', percent: share?.stepPercent, met: share?.stepPercent === undefined ? undefined : share.stepPercent < SHARE_TARGET_PERCENT },
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
  print('| K | logits | MiB/step (in+out) | timed steps | cohort ms (median) | cohort ms (p90) | raw ZeroMQ ms (median) | cohort / raw | teaching compute ms | % of CNN step |');
  print('|---|---|---|---|---|---|---|---|---|---|');
  for (const row of r.rows) {
    const pct = row.stepPercent === undefined ? '-' : `${row.stepPercent.toFixed(2)}%`;
    print(`| ${row.members} | ${shapeText(row.batch, row.classes)} | ${mib(row.bytesPerStep)} | ${row.steps} | ${ms(row.cohortMs)} | ${ms(row.cohortP90Ms)} | ${ms(row.rawMs)} | ${row.ratio.toFixed(2)} | ${ms(row.teachingMs)} | ${pct} |`);
  }
  const { ratio, stepShare } = r.targets;
  print('');
  print(`target: cohort within ${ratio.limit}x of raw ZeroMQ: ${ratio.met ? 'met for every row' : `NOT met for ${ratio.failing.join(', ')}`}`);
  print(stepShare.percent === undefined
    ? `target: under ${stepShare.limitPercent}% of the reference CNN step at K = 4, 128x10: not measured (${r.rows.some((x) => x.members === 4 && x.batch === 128 && x.classes === 10) ? 'no step time' : 'K = 4 at 128x10 not in this run'})`
    : `target: under ${stepShare.limitPercent}% of the reference CNN step at K = 4, 128x10: ${stepShare.met ? 'met' : 'NOT met'} (${stepShare.percent.toFixed(2)}% of ${r.step.ms!.toFixed(1)} ms)`);
}

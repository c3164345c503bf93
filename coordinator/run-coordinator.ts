/**
 * The coordinator of a distributed cohort: a ROUTER socket that admits the workers named in
 * the run config (checking protocol version, run id and role), sends each the config, and then
 * serves steps. At step s it gathers the members' logits (and the teachers', which run ahead
 * by at most `teacherWindow` steps), checks that all were computed on the same samples, and
 * sends each member one teaching tensor: for DML and DML_e the mean of its peers' probabilities
 * (plus, for DML, their mean negative entropy), for KD-style algorithms the teachers' mean
 * probabilities. It writes every evaluation, and the cohort ensemble's, as JSON lines in the
 * run directory. A message that does not parse is counted and dropped, never fatal.
 */
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { PROTOCOL_VERSION, type Message, type MessageOf, type TensorFrame } from '../shared/protocol/messages.js';
import { CoordinatorSocket } from '../shared/protocol/sockets.js';
import { EnsembleMetrics } from '../shared/metrics/ensemble-metrics.js';
import { softmaxRows } from '../shared/metrics/softmax-rows.js';
import { leaveOneOutTeaching } from './teaching.js';

export interface CoordinatorOptions {
  config: RunConfig;
  /** e.g. tcp://0.0.0.0:5555, or tcp://127.0.0.1:* for any free port. */
  bind: string;
  /** Steps between progress lines (default 50). */
  logEvery?: number;
  /** Called once bound, with the endpoint workers should connect to. */
  onListening?: (endpoint: string) => void;
  /** Aborting stops the run (e.g. a local worker process died); the reason becomes the error. */
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface EvalRecord {
  epoch: number;
  worker: string;
  role: 'member' | 'teacher' | 'ensemble';
  accuracy: number;
  nll: number;
  ece: number;
  [metric: string]: number | string;
}

export interface RunSummary {
  runDir: string;
  /** The last evaluation of every member and teacher, and of the ensemble (worker 'ensemble'). */
  final: EvalRecord[];
  steps: number;
  /** Undecodable messages dropped. */
  dropped: number;
}

interface StepLogits {
  indices: Uint32Array | Int32Array;
  logits: Float32Array;
  classes: number;
}

interface StepState {
  members: Map<string, StepLogits>;
  teachers: Map<string, StepLogits>;
  served: Set<string>;
  teacherProbs?: Float32Array;
}

const PEER_ALGORITHMS = new Set(['dml', 'dml_e']);
const TEACHER_ALGORITHMS = new Set(['kd', 'cross_quality_kd', 'takd']);

function float32(frame: TensorFrame): Float32Array {
  if (frame.dtype !== 'float32') throw new CohortError(`expected float32 logits, got ${frame.dtype}`);
  return frame.data;
}

function sameSamples(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const preview = (a: ArrayLike<number>) => `[${Array.from(a).slice(0, 4).join(', ')}${a.length > 4 ? ', ...' : ''}]`;

export async function runCoordinator(options: CoordinatorOptions): Promise<RunSummary> {
  const { config } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const logEvery = options.logEvery ?? 50;
  const members = config.members.map((m) => m.name);
  const teachers = config.teachers.map((t) => t.name);
  const roleOf = new Map<string, 'member' | 'teacher'>([...members.map((n) => [n, 'member'] as const), ...teachers.map((n) => [n, 'teacher'] as const)]);
  const runDir = join(config.runDir, config.name);
  mkdirSync(runDir, { recursive: true });
  const wireConfig = JSON.parse(JSON.stringify(config)) as unknown;
  writeFileSync(join(runDir, 'config.json'), `${JSON.stringify(wireConfig, null, 2)}\n`);
  const metricsFile = join(runDir, 'metrics.jsonl');

  let sending: Promise<void> = Promise.resolve();
  const socket: CoordinatorSocket = new CoordinatorSocket({
    float16: config.exchange.float16,
    onDropped: (error, peer) => {
      log(`coordinator: dropped a message from ${peer.toString('utf8')}: ${error}`);
      // A worker of another protocol version cannot be read, but it can be told why it is refused.
      if (/^protocol version /.test(error)) sending = sending.then(() => socket.send(peer, { type: 'reject', reason: error })).catch(() => {});
    },
  });
  const endpoint = await socket.bind(options.bind);
  log(`coordinator: run '${config.name}' (${config.algorithm}), waiting for ${[...members, ...teachers].join(', ')} on ${endpoint}`);
  options.onListening?.(endpoint);

  const joined = new Map<string, Buffer>();
  const done = new Set<string>();
  const steps = new Map<number, StepState>();
  const lastLoss = new Map<string, number>();
  const final = new Map<string, EvalRecord>();
  const evalBatches = new Map<string, Map<string, { logits: Float32Array; labels: Int32Array; classes: number }>>();
  const ensembles = new Map<number, EnsembleMetrics>();
  const evalsPerEpoch = new Map<number, Set<string>>();
  let served = 0;
  /** zeromq allows one pending send per socket: sends are queued in order. */
  const send = (name: string, message: Message) => {
    sending = sending.then(() => socket.send(joined.get(name) ?? name, message));
    return sending;
  };
  const broadcast = (names: Iterable<string>, message: Message) => Promise.all([...names].filter((n) => joined.has(n)).map((n) => send(n, message)));

  const record = (entry: EvalRecord) => {
    appendFileSync(metricsFile, `${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
    final.set(entry.worker, entry);
    const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
    const train = typeof entry.trainEce === 'number' ? ` | training batches: accuracy ${pct(entry.trainAccuracy as number)}, ECE ${pct(entry.trainEce)}` : '';
    log(`eval epoch ${entry.epoch + 1}: ${entry.worker}${entry.role === 'teacher' ? ' (teacher)' : ''} accuracy ${pct(entry.accuracy)} | NLL ${entry.nll.toFixed(4)} | ECE ${pct(entry.ece)}${train}`);
  };

  const onJoin = async (peer: Buffer, m: MessageOf<'join'>) => {
    const reject = (reason: string) => {
      log(`coordinator: refused '${m.member}': ${reason}`);
      sending = sending.then(() => socket.send(peer, { type: 'reject', reason }));
      return sending;
    };
    if (m.protocolVersion !== PROTOCOL_VERSION) return reject(`protocol version ${m.protocolVersion}; this coordinator speaks version ${PROTOCOL_VERSION}`);
    if (m.runId !== undefined && m.runId !== config.name) return reject(`this coordinator runs '${config.name}', not '${m.runId}'`);
    const role = roleOf.get(m.member);
    if (!role) return reject(`no member or teacher named '${m.member}' in run '${config.name}' (expected ${[...roleOf.keys()].join(', ')})`);
    if (m.role !== undefined && m.role !== role && !(m.role === 'student' && role === 'member')) return reject(`'${m.member}' is a ${role} in this run, not a ${m.role}`);
    if (joined.has(m.member)) return reject(`'${m.member}' has already joined`);
    joined.set(m.member, peer);
    log(`coordinator: ${m.member} (${role}) joined from ${m.host}, pid ${m.pid}`);
    await send(m.member, { type: 'welcome', runId: config.name, member: m.member, members: [...roleOf.keys()], startStep: 0, config: wireConfig });
  };

  const stepOf = (step: number): StepState => {
    let state = steps.get(step);
    if (!state) steps.set(step, (state = { members: new Map(), teachers: new Map(), served: new Set() }));
    return state;
  };

  const onLogits = async (name: string, m: MessageOf<'logits'>) => {
    const role = roleOf.get(name)!;
    const state = stepOf(m.step);
    const entry: StepLogits = { indices: m.indices.data as Uint32Array | Int32Array, logits: float32(m.logits), classes: m.logits.shape.at(-1)! };
    const other = [...state.members, ...state.teachers][0];
    if (other && !sameSamples(other[1].indices, entry.indices)) {
      throw new CohortError(`step ${m.step}: ${name}'s batch holds samples ${preview(entry.indices)} but ${other[0]}'s ${preview(other[1].indices)}; workers must read the same data with the same seed and batch size`);
    }
    (role === 'member' ? state.members : state.teachers).set(name, entry);
    if (role === 'member' && m.loss !== undefined) lastLoss.set(name, m.loss);
    await serve(m.step, state);
  };

  const serve = async (step: number, state: StepState) => {
    const waiting = members.filter((n) => state.members.has(n) && !state.served.has(n));
    if (PEER_ALGORITHMS.has(config.algorithm)) {
      if (state.members.size < members.length) return;
      const teaching = leaveOneOutTeaching(members.map((n) => state.members.get(n)!.logits), state.members.get(members[0])!.classes, config.temperature);
      await Promise.all(
        members.map((n, i) => {
          state.served.add(n);
          const rows = teaching[i].meanProbs.length / state.members.get(n)!.classes;
          return send(n, {
            type: 'teaching',
            step,
            teaching: { dtype: 'float32', shape: [rows, state.members.get(n)!.classes], data: teaching[i].meanProbs },
            ...(config.algorithm === 'dml' ? { peerNegEntropy: teaching[i].meanNegEntropy } : {}),
            peerCount: members.length - 1,
          });
        }),
      );
    } else if (TEACHER_ALGORITHMS.has(config.algorithm)) {
      if (state.teachers.size < teachers.length || waiting.length === 0) return;
      if (!state.teacherProbs) {
        const first = state.teachers.get(teachers[0])!;
        const mean = new Float32Array(first.logits.length);
        for (const t of teachers) {
          const { probs } = softmaxRows(state.teachers.get(t)!.logits, first.classes, config.temperature);
          for (let k = 0; k < mean.length; k++) mean[k] += probs[k] / teachers.length;
        }
        state.teacherProbs = mean;
      }
      const probs = state.teacherProbs;
      const classes = state.teachers.get(teachers[0])!.classes;
      await Promise.all(
        waiting.map((n) => {
          state.served.add(n);
          return send(n, { type: 'teaching', step, teaching: { dtype: 'float32', shape: [probs.length / classes, classes], data: probs }, peerCount: teachers.length });
        }),
      );
    } else {
      for (const n of waiting) state.served.add(n);
    }
    if (state.served.size < members.length) return;
    steps.delete(step);
    served++;
    if (teachers.length > 0) await broadcast(teachers, { type: 'advance', step });
    if ((step + 1) % logEvery === 0) {
      const losses = members.map((n) => `${n} ${lastLoss.get(n)?.toFixed(4) ?? '-'}`).join(' | ');
      log(`step ${step + 1} | loss ${losses}`);
    }
  };

  const onEvalLogits = (name: string, m: MessageOf<'evalLogits'>) => {
    if (roleOf.get(name) !== 'member') return;
    const key = `${m.epoch}:${m.batch}`;
    let batch = evalBatches.get(key);
    if (!batch) evalBatches.set(key, (batch = new Map()));
    batch.set(name, { logits: float32(m.logits), labels: m.labels.data as Int32Array, classes: m.logits.shape.at(-1)! });
    if (batch.size < members.length) return;
    let ensemble = ensembles.get(m.epoch);
    if (!ensemble) ensembles.set(m.epoch, (ensemble = new EnsembleMetrics()));
    const first = batch.get(members[0])!;
    ensemble.add(members.map((n) => batch.get(n)!.logits), first.labels, first.classes);
    evalBatches.delete(key);
  };

  const onEval = (name: string, m: MessageOf<'eval'>) => {
    const role = roleOf.get(name)!;
    record({ epoch: m.epoch, worker: name, role, accuracy: m.metrics.accuracy, nll: m.metrics.nll, ece: m.metrics.ece, ...m.metrics });
    if (role !== 'member') return;
    let reported = evalsPerEpoch.get(m.epoch);
    if (!reported) evalsPerEpoch.set(m.epoch, (reported = new Set()));
    reported.add(name);
    const ensemble = ensembles.get(m.epoch);
    if (reported.size === members.length && ensemble && members.length > 1) {
      record({ epoch: m.epoch, worker: 'ensemble', role: 'ensemble', ...ensemble.result() });
      ensembles.delete(m.epoch);
    }
  };

  const all = [...roleOf.keys()];
  let failure: CohortError | undefined;
  try {
    while (done.size < all.length) {
      const { peer, message } = await receiveWithin(socket, config.exchange.timeoutMs, () => all.filter((n) => !done.has(n)), options.signal);
      const name = peer.toString('utf8');
      if (message.type === 'join') {
        await onJoin(peer, message);
        continue;
      }
      if (!joined.has(name) || !joined.get(name)!.equals(peer)) {
        log(`coordinator: ignored a ${message.type} message from '${name}', which has not joined`);
        continue;
      }
      switch (message.type) {
        case 'logits':
          await onLogits(name, message);
          break;
        case 'evalLogits':
          onEvalLogits(name, message);
          break;
        case 'eval':
          onEval(name, message);
          break;
        case 'done':
          done.add(name);
          break;
        case 'error':
          throw new CohortError(`worker ${name} failed: ${message.message}`);
        default:
          break;
      }
    }
    await broadcast(all, { type: 'shutdown', reason: 'the run is complete' });
    await sending;
  } catch (error) {
    failure = error instanceof CohortError ? error : new CohortError(`coordinator: ${(error as Error).message}`);
    await broadcast(all, { type: 'shutdown', reason: failure.message }).catch(() => {});
    await sending.catch(() => {});
  } finally {
    socket.close();
  }
  if (failure) throw failure;
  const order = [...all, 'ensemble'];
  const finalInOrder = order.filter((n) => final.has(n)).map((n) => final.get(n)!);
  return { runDir, final: finalInOrder, steps: served, dropped: socket.dropped };
}

/** The next message; a CohortError naming the silent workers after `timeoutMs`, or the abort reason. */
async function receiveWithin(socket: CoordinatorSocket, timeoutMs: number, silent: () => string[], signal?: AbortSignal) {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CohortError(`no message from ${silent().join(', ')} for ${timeoutMs / 1000} s; giving up`)), timeoutMs);
    onAbort = () => reject(signal!.reason instanceof Error ? signal!.reason : new CohortError(String(signal!.reason)));
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([socket.receive(), stop]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

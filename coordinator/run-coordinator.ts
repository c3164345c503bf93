/**
 * The coordinator of a distributed cohort: a ROUTER socket that admits the workers named in
 * the run config (checking protocol version, run id and role), sends each the config, and then
 * serves steps. At step s it gathers the members' logits (and the teachers', which run ahead
 * by at most `teacherWindow` steps), checks that all were computed on the same samples, and
 * sends each member one teaching tensor, as its algorithm's teaching rule says
 * (shared/algorithms/registry.ts): for DML and DML_e the mean of its peers' probabilities
 * (plus, for DML, their mean negative entropy), for KD-style algorithms the teachers' mean
 * probabilities. It writes every evaluation, and the cohort ensemble's, as JSON lines in the
 * run directory. A message that does not parse is counted and dropped, never fatal.
 *
 * Faults: members save their part of a global checkpoint every `checkpoint.everySteps` steps
 * and report it; once all have, the coordinator writes the manifest that makes it complete. A
 * worker that dies (reported by the launcher), stops sending (no message for
 * `recovery.livenessMs`, heartbeats included) or rejoins as a new process is lost: with the
 * `restart` policy the cohort rolls back to the last complete checkpoint (a new generation;
 * older messages are ignored) and the worker's replacement is welcomed at that step. With the
 * `elastic` policy the others keep training: the lost worker's predictions leave the steps in
 * flight, steps are served by the live workers (DML averages over the live peers), and its
 * replacement restores its last complete checkpoint and rejoins at the first step not yet done.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { algorithmEntry } from '../shared/algorithms/registry.js';
import { workerModelName } from '../shared/config/onnx-teacher.js';
import { runDirectory, type RunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { fileErrorReason, writeFileAtomic } from '../shared/io/atomic-write.js';
import { checkpointDir, latestCheckpoint, pruneCheckpoints, writeCheckpointManifest } from '../shared/io/checkpoint.js';
import { PROTOCOL_VERSION, type Message, type MessageOf, type TensorFrame } from '../shared/protocol/messages.js';
import type { CoordinatorKeys } from '../shared/protocol/curve.js';
import { CoordinatorSocket, peerName } from '../shared/protocol/sockets.js';
import { EnsembleMetrics } from '../shared/metrics/ensemble-metrics.js';
import type { MetricsRecord, ReliabilityBin } from '../shared/metrics/records.js';
import { createProgressDisplay, type ProgressDisplay } from './progress-display.js';
import { PredictionSums } from './teaching.js';

/** Omit over each member of a union. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface CoordinatorOptions {
  config: RunConfig;
  /** e.g. tcp://0.0.0.0:5555, or tcp://127.0.0.1:* for any free port. */
  bind: string;
  /** Steps between progress lines (default 50; none when the display redraws in place). */
  logEvery?: number;
  /** The live display of the workers' progress (default: in place on a terminal, plain lines elsewhere, through `log`). */
  display?: ProgressDisplay;
  /** Called once bound, with the endpoint workers should connect to. */
  onListening?: (endpoint: string) => void;
  /** Aborting stops the run; the reason becomes the error. */
  signal?: AbortSignal;
  /** Called once listening, with the handle a launcher uses to report dead worker processes. */
  onControl?: (control: CoordinatorControl) => void;
  /**
   * Called when a worker is declared lost while its process may still be alive (silent for
   * `livenessMs`, or unreachable): a launcher stops that process and starts a new one.
   */
  onWorkerLost?: (worker: string, pid: number) => void;
  /** Continue from the run directory's last complete checkpoint (after every process died). */
  resume?: boolean;
  /** CURVE keys: encrypt the port and admit only authorised workers (absent: plain tcp). */
  curve?: CoordinatorKeys;
  log?: (line: string) => void;
}

export interface CoordinatorControl {
  /** A worker process is gone (its launcher saw it exit): the recovery policy applies. */
  lost(worker: string, reason: string): void;
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
  /** Workers lost and replaced. */
  restarts: number;
}

interface StepPredictions {
  indices: Uint32Array | Int32Array;
  probs: Float32Array;
  negEntropy: number;
  classes: number;
}

interface StepState {
  members: Map<string, StepPredictions>;
  teachers: Map<string, StepPredictions>;
  served: Set<string>;
  /** Running sums of the members' (DML) or the teachers' (KD) predictions. */
  sums?: PredictionSums;
  /** How many workers of the summing order (config order) the sums have passed. */
  summed: number;
}

function float32(frame: TensorFrame): Float32Array {
  if (frame.dtype !== 'float32') throw new CohortError(`expected a float32 tensor, got ${frame.dtype}`);
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
  const display = options.display ?? createProgressDisplay({ workers: [...config.members, ...config.teachers].map((w) => w.name), epochs: config.epochs, log: options.log });
  const log = (line: string) => display.log(line);
  const logEvery = options.logEvery ?? 50;
  const members = config.members.map((m) => m.name);
  const teachers = config.teachers.map((t) => t.name);
  /** What each member is sent at a step (its algorithm's teaching rule). */
  const rule = algorithmEntry(config.algorithm).teaching;
  const roleOf = new Map<string, 'member' | 'teacher'>([...members.map((n) => [n, 'member'] as const), ...teachers.map((n) => [n, 'teacher'] as const)]);
  const runDir = runDirectory(config);
  const wireConfig = JSON.parse(JSON.stringify(config)) as unknown;
  try {
    mkdirSync(runDir, { recursive: true });
    writeFileAtomic(join(runDir, 'config.json'), Buffer.from(`${JSON.stringify(wireConfig, null, 2)}\n`));
  } catch (error) {
    throw new CohortError(`run directory ${runDir} is not writable: ${error instanceof CohortError ? error.message : fileErrorReason(error)}`);
  }
  const metricsFile = join(runDir, 'metrics.jsonl');

  const socket: CoordinatorSocket = new CoordinatorSocket({
    float16: config.exchange.float16,
    limits: { maxMessageBytes: Math.round(config.exchange.maxMessageMiB * 2 ** 20) },
    ...(options.curve ? { curve: { ...options.curve, onDenied: (address: string, key: string) => log(`coordinator: refused a connection from ${address}: CURVE key ${key || '(none)'} is not authorised`) } } : {}),
    onDropped: (error, peer) => {
      log(`coordinator: dropped a message from ${peerName(peer)}: ${error}`);
      // A worker of another protocol version cannot be read, but it can be told why it is refused.
      if (/^protocol version /.test(error)) socket.send(peer, { type: 'reject', reason: error }).catch(() => {});
    },
  });
  const endpoint = await socket.bind(options.bind);
  log(`coordinator: run '${config.name}' (${config.algorithm}), waiting for ${[...members, ...teachers].join(', ')} on ${endpoint}${options.curve ? ' (CURVE)' : ' (no encryption)'}`);
  options.onListening?.(endpoint);

  const joined = new Map<string, Buffer>();
  /** Which member a peer (routing id, hex) joined as. */
  const memberOf = new Map<string, string>();
  const pidOf = new Map<string, string>();
  const lastSeen = new Map<string, number>();
  const done = new Set<string>();
  /** Joined workers that have sent something since their welcome (a join again from them is not a retransmission). */
  const active = new Set<string>();
  const reportedCheckpoints = new Map<number, Set<string>>();
  const lostQueue: { name: string; reason: string; stillRunning?: boolean }[] = [];
  let wake: (() => void) | undefined;
  let generation = 0;
  let restarts = 0;
  /** Where a (re)joining worker starts: step 0, or a checkpoint after a rollback or on resume. */
  let resumeAt: { step: number; dir?: string } = { step: 0 };
  /** Elastic policy: workers lost and not yet back; the others train without them. */
  const absent = new Map<string, { since: number }>();
  /** Elastic rejoins: where each returning worker was told to start (answered again if it asks again). */
  const rejoinAt = new Map<string, { step: number; dir?: string; checkpointStep: number }>();
  /** The first step not yet done by every live member. */
  let nextStep = 0;
  if (options.resume) {
    const latest = latestCheckpoint(runDir);
    if (!latest) throw new CohortError(`cannot resume: no complete checkpoint in ${join(runDir, 'checkpoints')}`);
    resumeAt = { step: latest.step, dir: checkpointDir(runDir, latest.step) };
    nextStep = latest.step;
    log(`coordinator: resuming from the checkpoint of step ${latest.step} (${resumeAt.dir})`);
  }
  options.onControl?.({
    lost: (name, reason) => {
      lostQueue.push({ name, reason });
      wake?.();
    },
  });
  const steps = new Map<number, StepState>();
  const lastLoss = new Map<string, number>();
  const final = new Map<string, EvalRecord>();
  const evalBatches = new Map<string, Map<string, { logits: Float32Array; labels: Int32Array; classes: number }>>();
  const ensembles = new Map<number, EnsembleMetrics>();
  const evalsPerEpoch = new Map<number, Set<string>>();
  let served = 0;
  /** Sends to a joined worker; a worker that cannot be reached is lost (the recovery policy applies). */
  const send = (name: string, message: Message): Promise<void> => {
    const peer = joined.get(name);
    return socket.send(peer ?? name, message).catch((error: Error) => {
      if (peer && joined.get(name) === peer) {
        lostQueue.push({ name, reason: `unreachable (${error.message})`, stillRunning: true });
        wake?.();
      }
    });
  };
  const broadcast = (names: Iterable<string>, message: Message) => Promise.all([...names].filter((n) => joined.has(n)).map((n) => send(n, message)));

  /** Appends one record to metrics.jsonl (schema: shared/metrics/records.ts). */
  const writeRecord = (entry: DistributiveOmit<MetricsRecord, 'time'>) => {
    try {
      appendFileSync(metricsFile, `${JSON.stringify({ ...entry, time: new Date().toISOString() })}\n`);
    } catch (error) {
      throw new CohortError(`cannot append to ${metricsFile}: ${fileErrorReason(error)}`);
    }
  };
  const record = (entry: EvalRecord, reliability?: ReliabilityBin[]) => {
    writeRecord({ kind: 'eval', ...entry, ...(reliability ? { reliability } : {}) } as DistributiveOmit<MetricsRecord, 'time'>);
    final.set(entry.worker, entry);
    const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
    const train = typeof entry.trainEce === 'number' ? ` | training batches: accuracy ${pct(entry.trainAccuracy as number)}, ECE ${pct(entry.trainEce)}` : '';
    log(`eval epoch ${entry.epoch + 1}: ${entry.worker}${entry.role === 'teacher' ? ' (teacher)' : ''} accuracy ${pct(entry.accuracy)} | NLL ${entry.nll.toFixed(4)} | ECE ${pct(entry.ece)}${train}`);
  };

  // The metrics file describes itself: which run, algorithm and workers, from which step.
  const worker = (w: RunConfig['members'][number] | RunConfig['teachers'][number]) => ({ name: w.name, model: workerModelName(w) });
  writeRecord({ kind: 'run', run: config.name, algorithm: config.algorithm, members: config.members.map(worker), teachers: config.teachers.map(worker), epochs: config.epochs, batchSize: config.batchSize, startStep: resumeAt.step });

  const onJoin = async (peer: Buffer, m: MessageOf<'join'>) => {
    const reject = (reason: string, retryable = false) => {
      log(`coordinator: refused '${m.member}': ${reason}`);
      return socket.send(peer, { type: 'reject', reason, ...(retryable ? { retryable } : {}) }).catch(() => {});
    };
    if (m.protocolVersion !== PROTOCOL_VERSION) return reject(`protocol version ${m.protocolVersion}; this coordinator speaks version ${PROTOCOL_VERSION}`);
    if (m.runId !== undefined && m.runId !== config.name) return reject(`this coordinator runs '${config.name}', not '${m.runId}'`);
    const role = roleOf.get(m.member);
    if (!role) return reject(`no member or teacher named '${m.member}' in run '${config.name}' (expected ${[...roleOf.keys()].join(', ')})`);
    if (m.role !== undefined && m.role !== role && !(m.role === 'student' && role === 'member')) return reject(`'${m.member}' is a ${role} in this run, not a ${m.role}`);
    const process = `${m.host}:${m.pid}`;
    if (joined.has(m.member) && pidOf.get(m.member) === process) {
      // The same process asking again before it did anything else: its first answer was slow.
      if (!active.has(m.member)) return welcome(m.member);
      // It was training and heard nothing from us for livenessMs (a stalled machine or network):
      // it no longer follows this run's steps, so it is lost, and admitted again below.
      await workerLost(m.member, 'it lost contact with the coordinator and joined again');
    }
    if (joined.has(m.member)) {
      // Another process under a live worker's name: refused until that worker is declared lost
      // (it died, or it has been silent for livenessMs); a restarted worker keeps asking.
      return reject(`'${m.member}' has already joined (from ${pidOf.get(m.member)})`, true);
    }
    joined.set(m.member, peer);
    memberOf.set(peer.toString('hex'), m.member);
    pidOf.set(m.member, process);
    lastSeen.set(m.member, Date.now());
    if (absent.delete(m.member)) {
      // Elastic: back from its last complete checkpoint, at the first step not yet done.
      const latest = await latestComplete();
      const at = { step: nextStep, checkpointStep: latest?.step ?? 0, ...(latest ? { dir: checkpointDir(runDir, latest.step) } : {}) };
      rejoinAt.set(m.member, at);
      log(`coordinator: ${m.member} (${role}) rejoined from ${m.host}, pid ${m.pid}; it restores ${at.dir ? `the checkpoint of step ${at.checkpointStep}` : 'its initial weights'} and continues at step ${at.step}`);
    } else {
      rejoinAt.delete(m.member);
      log(`coordinator: ${m.member} (${role}) joined from ${m.host}, pid ${m.pid}${resumeAt.step > 0 ? `; it starts at step ${resumeAt.step}` : ''}`);
    }
    await welcome(m.member);
  };

  const welcome = (name: string) => {
    const rejoin = rejoinAt.get(name);
    const start = rejoin ?? resumeAt;
    return send(name, {
      type: 'welcome',
      runId: config.name,
      member: name,
      members: [...roleOf.keys()],
      startStep: start.step,
      config: wireConfig,
      ...(start.dir ? { resume: start.dir } : {}),
      ...(rejoin ? { checkpointStep: rejoin.checkpointStep } : {}),
      generation,
    });
  };
  /** The members (or teachers) a step waits for: all, less those lost under the elastic policy. */
  const live = (names: string[]) => names.filter((n) => !absent.has(n));

  /** Steps every member has been served (since the last rollback). */
  const servedSteps = new Set<number>();
  /** Sums of finished steps, reset and reused by later ones (each holds a WebAssembly memory). */
  const spareSums: PredictionSums[] = [];
  const newSums = (size: number) => {
    const spare = spareSums.findIndex((s) => s.size === size);
    return spare >= 0 ? spareSums.splice(spare, 1)[0].reset() : new PredictionSums(size);
  };
  const stepOf = (step: number): StepState => {
    let state = steps.get(step);
    if (!state) steps.set(step, (state = { members: new Map(), teachers: new Map(), served: new Set(), summed: 0 }));
    return state;
  };

  /**
   * Adds a step's predictions to its sums in config order, whatever order they arrive in, so a
   * run's arithmetic does not depend on timing (float sums depend on their order): as far as
   * the config-order prefix has arrived, or, with `complete` (the step is being served), all
   * that are there.
   */
  const sumOrder = rule.kind === 'peers-leave-one-out' ? members : rule.kind === 'teachers-mean' ? teachers : [];
  const accumulate = (state: StepState, complete = false) => {
    const group = rule.kind === 'peers-leave-one-out' ? state.members : state.teachers;
    for (; state.summed < sumOrder.length; state.summed++) {
      const entry = group.get(sumOrder[state.summed]);
      if (entry) (state.sums ??= newSums(entry.probs.length)).add(entry.probs, entry.negEntropy);
      else if (!complete) break;
    }
  };

  const onPredictions = async (name: string, m: MessageOf<'predictions'>) => {
    const role = roleOf.get(name)!;
    if (servedSteps.has(m.step)) {
      log(`coordinator: ignored predictions of ${name} for step ${m.step}, which is already done`);
      return;
    }
    const state = stepOf(m.step);
    const entry: StepPredictions = { indices: m.indices.data as Uint32Array | Int32Array, probs: float32(m.probs), negEntropy: m.negEntropy, classes: m.probs.shape[1] };
    // The first predictions of this step, which every later one must match.
    const first = [...state.members, ...state.teachers][0];
    if (first && !sameSamples(first[1].indices, entry.indices)) {
      throw new CohortError(`step ${m.step}: ${name}'s batch holds samples ${preview(entry.indices)} but ${first[0]}'s ${preview(first[1].indices)}; workers must read the same data with the same seed and batch size`);
    }
    if (first && first[1].probs.length !== entry.probs.length) {
      const { probs, classes } = first[1];
      log(`coordinator: ignored predictions of ${name} for step ${m.step}: shape ${m.probs.shape.join('x')}, the others sent ${probs.length / classes}x${classes}`);
      return;
    }
    const group = role === 'member' ? state.members : state.teachers;
    if (group.has(name)) return; // a duplicate
    group.set(name, entry);
    // Sum as predictions arrive, overlapping the wait for the others.
    accumulate(state);
    if (role === 'member' && m.loss !== undefined) lastLoss.set(name, m.loss);
    await serve(m.step, state);
  };

  const serve = async (step: number, state: StepState) => {
    const liveMembers = live(members);
    const waiting = liveMembers.filter((n) => state.members.has(n) && !state.served.has(n));
    if (rule.kind === 'peers-leave-one-out') {
      // Every live member's predictions, and at least one peer for each.
      if (waiting.length < liveMembers.length || waiting.length < 2) return;
      accumulate(state, true);
      // Each member's signal goes out as soon as it is computed, so ZeroMQ's I/O thread sends
      // it while the next one is computed (sends never reject: a failure marks the worker lost).
      for (const n of waiting) {
        state.served.add(n);
        const own = state.members.get(n)!;
        // own.probs is not read again once the step is served: its teaching signal is written
        // over it (no new buffer per member and step: at 256x1000 a fresh 1 MB costs page faults).
        const teaching = state.sums!.leaveOneOut(own.probs, own.negEntropy, own.probs);
        await send(n, {
          type: 'teaching',
          step,
          teaching: { dtype: 'float32', shape: [own.probs.length / own.classes, own.classes], data: teaching.meanProbs },
          ...(rule.negEntropy ? { peerNegEntropy: teaching.meanNegEntropy } : {}),
          peerCount: waiting.length - 1,
          generation,
        });
      }
    } else if (rule.kind === 'teachers-mean') {
      const liveTeachers = live(teachers);
      if (waiting.length === 0 || state.teachers.size === 0 || !liveTeachers.every((n) => state.teachers.has(n))) return;
      accumulate(state, true);
      const probs = state.sums!.mean();
      const classes = [...state.teachers.values()][0].classes;
      await Promise.all(
        waiting.map((n) => {
          state.served.add(n);
          return send(n, { type: 'teaching', step, teaching: { dtype: 'float32', shape: [probs.length / classes, classes], data: probs }, peerCount: state.teachers.size, generation });
        }),
      );
    } else {
      for (const n of waiting) state.served.add(n);
    }
    if (!liveMembers.every((n) => state.served.has(n))) return;
    steps.delete(step);
    servedSteps.add(step);
    while (servedSteps.has(nextStep)) nextStep++;
    if (state.sums && spareSums.length < 4) spareSums.push(state.sums); // reused by a later step: less garbage
    served++;
    if (teachers.length > 0) await broadcast(teachers, { type: 'advance', step });
    if ((step + 1) % logEvery === 0 && !display.interactive) {
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
    record({ epoch: m.epoch, worker: name, role, accuracy: m.metrics.accuracy, nll: m.metrics.nll, ece: m.metrics.ece, ...m.metrics }, m.reliability);
    if (role !== 'member') return;
    let reported = evalsPerEpoch.get(m.epoch);
    if (!reported) evalsPerEpoch.set(m.epoch, (reported = new Set()));
    reported.add(name);
    const ensemble = ensembles.get(m.epoch);
    if (reported.size === members.length && ensemble && members.length > 1) {
      const { bins, ...metrics } = ensemble.result();
      record({ epoch: m.epoch, worker: 'ensemble', role: 'ensemble', ...metrics }, bins.map((b) => ({ ...b, accuracy: b.count > 0 ? b.accuracy : null, confidence: b.count > 0 ? b.confidence : null })));
      ensembles.delete(m.epoch);
    }
  };

  const onCheckpointed = (name: string, m: MessageOf<'checkpointed'>) => {
    let reported = reportedCheckpoints.get(m.step);
    if (!reported) reportedCheckpoints.set(m.step, (reported = new Set()));
    reported.add(name);
    if (reported.size < members.length) return;
    reportedCheckpoints.delete(m.step);
    // Off the event loop: a slow disk's fsync must not hold back the heartbeats (workers would
    // declare the coordinator lost). In order; a failure (a full disk) fails the run.
    checkpointWrites = checkpointWrites.then(async () => {
      await writeCheckpointManifest(runDir, m.step, members);
      await pruneCheckpoints(runDir, config.checkpoint.keep);
      log(`coordinator: checkpoint of step ${m.step} complete (${checkpointDir(runDir, m.step)})`);
    }).catch((error: unknown) => {
      checkpointFailure ??= error instanceof CohortError ? error : new CohortError(`checkpoint of step ${m.step}: ${(error as Error).message}`);
      wake?.();
    });
  };
  let checkpointWrites: Promise<void> = Promise.resolve();
  let checkpointFailure: CohortError | undefined;
  /** The newest complete checkpoint once the manifests being written are on disk. */
  const latestComplete = async () => {
    await checkpointWrites;
    return latestCheckpoint(runDir);
  };

  /** Applies the recovery policy to a lost worker: roll the cohort back, go on without it, or stop the run. */
  async function workerLost(name: string, reason: string, stillRunning = false): Promise<void> {
    if (!roleOf.has(name) || absent.has(name)) return;
    const when = new Date().toISOString();
    if (config.recovery.policy === 'fail') throw new CohortError(`worker ${name} lost at ${when}: ${reason} (recovery policy 'fail')`);
    restarts++;
    if (restarts > config.recovery.maxRestarts) {
      throw new CohortError(`worker ${name} lost at ${when}: ${reason}; giving up after ${config.recovery.maxRestarts} restart(s)`);
    }
    const peer = joined.get(name);
    if (peer) memberOf.delete(peer.toString('hex'));
    active.delete(name);
    const pid = Number(pidOf.get(name)?.split(':').pop());
    if (stillRunning && pid > 0) options.onWorkerLost?.(name, pid);
    joined.delete(name);
    pidOf.delete(name);
    lastSeen.delete(name);
    if (config.recovery.policy === 'elastic') return continueWithout(name, when, reason);
    generation++;
    const latest = await latestComplete();
    resumeAt = latest ? { step: latest.step, dir: checkpointDir(runDir, latest.step) } : { step: 0 };
    for (const state of [steps, evalBatches, ensembles, evalsPerEpoch, reportedCheckpoints, servedSteps]) state.clear();
    done.clear();
    nextStep = resumeAt.step;
    log(
      `coordinator: ${name} lost at ${when} (${reason}); rolling the cohort back to step ${resumeAt.step} ` +
        `(${resumeAt.dir ? `checkpoint ${resumeAt.dir}` : 'initial weights: no checkpoint yet'}), generation ${generation}; ` +
        `waiting for ${name} to rejoin (restart ${restarts} of at most ${config.recovery.maxRestarts})`,
    );
    await broadcast(joined.keys(), { type: 'rollback', step: resumeAt.step, ...(resumeAt.dir ? { checkpoint: resumeAt.dir } : {}), generation, reason: `${name} lost: ${reason}` });
  }

  /** Elastic: the steps in flight drop the lost worker's predictions and are served by the live ones. */
  async function continueWithout(name: string, when: string, reason: string): Promise<void> {
    absent.set(name, { since: Date.now() });
    done.delete(name);
    const role = roleOf.get(name)!;
    for (const state of steps.values()) {
      if (!(role === 'member' ? state.members : state.teachers).delete(name)) continue;
      // The sums of the others, added again (not a subtraction, which would round differently).
      state.sums = undefined;
      state.summed = 0;
      accumulate(state);
    }
    const others = [...roleOf.keys()].filter((n) => !absent.has(n));
    log(
      `coordinator: ${name} lost at ${when} (${reason}); elastic: ${others.join(', ')} continue without it from step ${nextStep}; ` +
        `waiting for ${name} to rejoin from its last checkpoint (restart ${restarts} of at most ${config.recovery.maxRestarts})`,
    );
    for (const step of [...steps.keys()].sort((a, b) => a - b)) {
      const state = steps.get(step);
      if (state) await serve(step, state);
    }
  }

  const all = [...roleOf.keys()];
  let failure: CohortError | undefined;
  let pending: Promise<{ peer: Buffer; message: Message }> | undefined;
  let lastActivity = Date.now();
  let lastBeat = Date.now();
  // The abort signal wakes the wait below instead of being raced as one long-lived promise: each
  // Promise.race on a promise that never settles adds a reaction to it that holds the race's
  // result, so every message received (tensors included) would stay in memory for the whole run.
  const onAbort = () => wake?.();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    while (done.size + absent.size < all.length || absent.size > 0) {
      // Elastic: every other worker is done; one that does not come back is given up on.
      if (absent.size > 0 && done.size + absent.size === all.length) {
        const late = [...absent].filter(([, a]) => Date.now() - a.since > config.exchange.timeoutMs).map(([n]) => n);
        if (late.length === absent.size) {
          log(`coordinator: ${late.join(', ')} did not rejoin within ${config.exchange.timeoutMs / 1000} s of being lost; finishing without ${late.length > 1 ? 'them' : 'it'} (no final weights or last evaluation)`);
          break;
        }
      }
      pending ??= socket.receive();
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<'tick'>((resolve) => {
        timer = setTimeout(() => resolve('tick'), 500);
        wake = () => resolve('tick');
      });
      throwIfAborted(options.signal);
      const next = await Promise.race([pending, tick]);
      clearTimeout(timer); // a message usually wins the race: no timer left behind per message
      wake = undefined;
      throwIfAborted(options.signal);
      const now = Date.now();
      if (checkpointFailure) throw checkpointFailure;
      for (const lost of lostQueue.splice(0)) await workerLost(lost.name, lost.reason, lost.stillRunning);
      if (now - lastBeat >= config.recovery.heartbeatMs) {
        lastBeat = now;
        void broadcast(joined.keys(), { type: 'heartbeat' });
      }
      for (const [name, seen] of [...lastSeen]) {
        if (!done.has(name) && now - seen > config.recovery.livenessMs) await workerLost(name, `no message for ${((now - seen) / 1000).toFixed(1)} s`, true);
      }
      if (next === 'tick') {
        if (now - lastActivity > config.exchange.timeoutMs) {
          throw new CohortError(`no message from ${all.filter((n) => !done.has(n)).join(', ')} for ${config.exchange.timeoutMs / 1000} s; giving up`);
        }
        continue;
      }
      pending = undefined;
      lastActivity = now;
      const { peer, message } = next;
      if (message.type === 'join') {
        await onJoin(peer, message);
        continue;
      }
      const name = memberOf.get(peer.toString('hex'));
      if (name === undefined) {
        log(`coordinator: ignored a ${message.type} message from ${peerName(peer)}, which has not joined`);
        continue;
      }
      lastSeen.set(name, now);
      active.add(name);
      if ('generation' in message && (message.generation ?? 0) < generation) continue; // sent before a rollback
      switch (message.type) {
        case 'predictions':
          await onPredictions(name, message);
          break;
        case 'evalLogits':
          onEvalLogits(name, message);
          break;
        case 'eval':
          onEval(name, message);
          break;
        case 'progress': {
          const { type: _, generation: __, totalSteps, ...fields } = message;
          writeRecord({ kind: 'step', worker: name, role: roleOf.get(name)!, ...fields });
          display.update({ worker: name, totalSteps, ...fields });
          break;
        }
        case 'done':
          done.add(name);
          break;
        case 'checkpointed':
          onCheckpointed(name, message);
          break;
        case 'error':
          throw new CohortError(`worker ${name} failed: ${message.message}`);
        default:
          break;
      }
    }
    await checkpointWrites;
    if (checkpointFailure) throw checkpointFailure;
    await broadcast(all, { type: 'shutdown', reason: 'the run is complete' });
    await socket.flush();
    display.stop();
  } catch (error) {
    display.stop();
    failure = error instanceof CohortError ? error : new CohortError(`coordinator: ${(error as Error).message}`);
    await broadcast(all, { type: 'shutdown', reason: failure.message }).catch(() => {});
    await socket.flush();
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    pending?.catch(() => {}); // rejected by the close below
    socket.close();
  }
  if (failure) throw failure;
  const order = [...all, 'ensemble'];
  const finalInOrder = order.filter((n) => final.has(n)).map((n) => final.get(n)!);
  return { runDir, final: finalInOrder, steps: served, dropped: socket.dropped, restarts };
}

/** Throws the abort reason (an Error as is, anything else as a CohortError) once `signal` has aborted. */
function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new CohortError(String(signal.reason));
}


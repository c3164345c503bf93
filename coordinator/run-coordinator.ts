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
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { algorithmEntry } from '../shared/algorithms/registry.js';
import { workerModelName } from '../shared/config/onnx-teacher.js';
import { runDirectory, type RunConfig } from '../shared/config/run-config.js';
import { asCohortError, CohortError } from '../shared/errors.js';
import { failpoint } from '../shared/faults/failpoints.js';
import { fileErrorReason, writeFileAtomic } from '../shared/io/atomic-write.js';
import type { EventRecord, LossReason, ReliabilityBin } from '../shared/metrics/records.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import type { CoordinatorKeys } from '../shared/protocol/curve.js';
import { CoordinatorSocket, peerName } from '../shared/protocol/sockets.js';
import { Checkpoints, diskStore, type StartPoint } from './checkpoints.js';
import { Evaluations, type EvalRecord } from './evaluations.js';
import { Liveness } from './liveness.js';
import { Membership } from './membership.js';
import { createProgressDisplay, type ProgressDisplay } from './progress-display.js';
import { judgeElasticSilence, judgeRejoin, judgeSilence, Recovery } from './recovery.js';
import { RunRecords } from './run-records.js';
import { StepServer } from './step-server.js';
import { GracefulStop } from './stop.js';

export type { EvalRecord } from './evaluations.js';

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
  /** Aborting stops the run at once; the reason becomes the error. */
  signal?: AbortSignal;
  /**
   * Aborting asks for a graceful stop (coordinator/stop.ts; the reason names the signal): the
   * members checkpoint at the next step barrier, the workers are shut down, and the run returns
   * with `stopped`.
   */
  stopRequest?: AbortSignal;
  /** Called once listening, with the handle a launcher uses to report dead worker processes. */
  onControl?: (control: CoordinatorControl) => void;
  /**
   * Called when a worker is declared lost while its process may still be alive (silent for
   * `livenessMs`, or unreachable): a launcher stops that process and starts a new one.
   */
  onWorkerLost?: (worker: string, pid: number) => void;
  /** Called with each event the run writes to metrics.jsonl (worker admitted, lost, rollback, ...). */
  onEvent?: (event: EventRecord) => void;
  /** Continue from the run directory's last complete checkpoint (after every process died). */
  resume?: boolean;
  /** CURVE keys: encrypt the port and admit only authorised workers (absent: plain tcp). */
  curve?: CoordinatorKeys;
  log?: (line: string) => void;
}

export interface CoordinatorControl {
  /** A worker process is gone (its launcher saw it exit): the recovery policy applies. */
  lost(worker: string, reason: string): void;
  /** The launcher started a worker's process (attempt 0, then its replacements): recorded as an event. */
  started(worker: string, pid: number, attempt: number, delayMs: number, host?: string): void;
  /** The launcher stopped the process of a worker declared lost: recorded as an event. */
  stopped(worker: string, pid: number): void;
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
  /** A graceful stop: the signal that asked, and the step of the checkpoint to resume from (none: nothing was ever checkpointed). */
  stopped?: { signal: string; checkpointStep?: number };
}

interface LostWorker {
  name: string;
  reason: LossReason;
  detail: string;
  silentMs?: number;
  /** Its process may still run: the launcher is asked to stop it. */
  stillRunning?: boolean;
  /** Whether it uses a restart (default: yes; not for a rejoin from the same process). */
  counts?: boolean;
  /** An earlier loss of the same incident rolled the cohort back: no new rollback. */
  sameIncident?: boolean;
}

/** A message read from the socket, with the routing id of the peer that sent it. */
type Arrival = { peer: Buffer; message: Message };

export async function runCoordinator(options: CoordinatorOptions): Promise<RunSummary> {
  const run = new CoordinatorRun(options);
  try {
    await run.open();
  } catch (error) {
    run.close();
    throw error;
  }
  return run.run();
}

/** One run of the coordinator: its parts, and the main loop that feeds them messages. */
class CoordinatorRun {
  private readonly config: RunConfig;
  private readonly display: ProgressDisplay;
  private readonly logEvery: number;
  private readonly runDir: string;
  private readonly wireConfig: unknown;
  private readonly members: Membership;
  private readonly liveness: Liveness;
  private readonly server: StepServer;
  private readonly evaluations: Evaluations;
  private readonly checkpoints: Checkpoints;
  private readonly recovery: Recovery;
  private readonly records: RunRecords;
  private readonly socket: CoordinatorSocket;
  private readonly stop: GracefulStop;
  /** The run ended by a graceful stop (its checkpoint is complete, or there was nothing to save). */
  private stoppedGracefully = false;
  /** Where a (re)joining worker starts: step 0, or a checkpoint after a rollback or on resume. */
  private resumeAt: StartPoint = { step: 0 };
  /** When the last loss was decided (ms): an elastic silence that began before it is of the same incident. */
  private lastDecisionAt = -Infinity;
  /** Losses reported between two turns of the loop (by the launcher, or by a failed send). */
  private readonly lostQueue: LostWorker[] = [];
  /** Wakes the loop's wait (a loss reported, an abort, a checkpoint failure). */
  private wake: (() => void) | undefined;
  /** The socket's receive in progress: it outlives a turn that ends on a tick. */
  private pending: Promise<Arrival> | undefined;

  constructor(private readonly options: CoordinatorOptions) {
    const { config } = options;
    this.config = config;
    this.display = options.display ?? createProgressDisplay({ workers: [...config.members, ...config.teachers].map((w) => w.name), epochs: config.epochs, log: options.log });
    this.logEvery = options.logEvery ?? 50;
    this.runDir = runDirectory(config);
    this.wireConfig = JSON.parse(JSON.stringify(config)) as unknown;
    this.members = new Membership(
      config.name,
      config.members.map((m) => m.name),
      config.teachers.map((t) => t.name),
    );
    this.liveness = new Liveness({ livenessMs: config.recovery.livenessMs, heartbeatMs: config.recovery.heartbeatMs, timeoutMs: config.exchange.timeoutMs }, Date.now());
    this.server = new StepServer({
      members: this.members.members,
      teachers: this.members.teachers,
      rule: algorithmEntry(config.algorithm).teaching,
      isLive: (n) => !this.members.isAbsent(n),
    });
    this.evaluations = new Evaluations(this.members.members);
    this.records = new RunRecords(join(this.runDir, 'metrics.jsonl'), options.onEvent);
    this.checkpoints = new Checkpoints(this.members.members, diskStore(this.runDir, config.checkpoint.keep), {
      onComplete: (step, dir) => {
        this.log(`coordinator: checkpoint of step ${step} complete (${dir})`);
        this.records.event('checkpoint-complete', { step, dir });
        if (this.stop.completed(step)) this.wake?.();
      },
      onFailure: () => this.wake?.(),
    });
    this.recovery = new Recovery(config.recovery);
    this.stop = new GracefulStop(config.exchange.timeoutMs);
    this.socket = new CoordinatorSocket({
      float16: config.exchange.float16,
      limits: { maxMessageBytes: Math.round(config.exchange.maxMessageMiB * 2 ** 20) },
      ...(options.curve
        ? {
            curve: {
              ...options.curve,
              onDenied: (address: string, key: string) => this.log(`coordinator: refused a connection from ${address}: CURVE key ${key || '(none)'} is not authorised`),
            },
          }
        : {}),
      onDropped: (error, peer, code) => {
        this.log(`coordinator: dropped a message from ${peerName(peer)}: ${error}`);
        // A worker of another protocol version cannot be read, but it can be told why it is refused.
        if (code === 'PROTOCOL_VERSION') this.socket.send(peer, { type: 'reject', reason: error }).catch(() => {});
      },
    });
  }

  private log(line: string): void {
    this.display.log(line);
  }

  /** Writes the run directory's config, binds the socket, and reads the checkpoint to resume from. */
  async open(): Promise<void> {
    const { config, options, runDir } = this;
    try {
      mkdirSync(runDir, { recursive: true });
      writeFileAtomic(join(runDir, 'config.json'), Buffer.from(`${JSON.stringify(this.wireConfig, null, 2)}\n`));
    } catch (error) {
      throw new CohortError(`run directory ${runDir} is not writable: ${error instanceof CohortError ? error.message : fileErrorReason(error)}`, {
        code: 'RUN_DIR_UNWRITABLE',
        cause: error,
      });
    }
    const endpoint = await this.socket.bind(options.bind);
    this.log(
      `coordinator: run '${config.name}' (${config.algorithm}), waiting for ${this.members.all.join(', ')} on ${endpoint}${options.curve ? ' (CURVE)' : ' (no encryption)'}`,
    );
    if (options.resume) {
      const latest = await this.checkpoints.latest();
      if (!latest) {
        throw new CohortError(`cannot resume: no complete checkpoint in ${join(runDir, 'checkpoints')}`, { code: 'NO_CHECKPOINT' });
      }
      this.resumeAt = latest;
      this.server.nextStep = latest.step;
      this.log(`coordinator: resuming from the checkpoint of step ${latest.step} (${latest.dir})`);
    }
    options.onControl?.({
      lost: (name, reason) => this.reportLost({ name, reason: 'exited', detail: reason }),
      started: (worker, pid, attempt, delayMs, host) => this.records.event('worker-started', { worker, pid, attempt, delayMs, ...(host === undefined ? {} : { host }) }),
      stopped: (worker, pid) => this.records.event('worker-stopped', { worker, pid }),
    });
    // The metrics file describes itself: which run, algorithm and workers, from which step.
    const worker = (w: RunConfig['members'][number] | RunConfig['teachers'][number]) => ({ name: w.name, model: workerModelName(w) });
    this.records.write({
      kind: 'run',
      run: config.name,
      algorithm: config.algorithm,
      members: config.members.map(worker),
      teachers: config.teachers.map(worker),
      epochs: config.epochs,
      batchSize: config.batchSize,
      startStep: this.resumeAt.step,
    });
    if (options.resume) this.records.event('resumed', { step: this.resumeAt.step, dir: this.resumeAt.dir! });
    // Once the run is described and controllable: a launcher starts the workers from here.
    options.onListening?.(endpoint);
  }

  /** Closes the socket (a run that failed to open). */
  close(): void {
    this.socket.close();
  }

  private reportLost(lost: LostWorker): void {
    this.lostQueue.push(lost);
    this.wake?.();
  }

  /** Sends to a joined worker; a worker that cannot be reached is lost (the recovery policy applies). */
  private send = async (name: string, message: Message): Promise<void> => {
    for (;;) {
      const peer = this.members.peerOf(name);
      try {
        return await this.socket.send(peer ?? name, message);
      } catch (error) {
        if (!peer || this.members.peerOf(name) !== peer) return;
        // Just after a stall of our own, connections are coming back: try again for a while.
        if (this.liveness.recovering(Date.now())) {
          await new Promise((resolve) => setTimeout(resolve, 200));
          continue;
        }
        this.reportLost({ name, reason: 'unreachable', detail: `unreachable (${(error as Error).message})`, stillRunning: true });
        return;
      }
    }
  };

  private broadcast(names: Iterable<string>, message: Message): Promise<unknown> {
    return Promise.all([...names].filter((n) => this.members.isJoined(n)).map((n) => this.send(n, message)));
  }

  private recordEval(entry: EvalRecord, reliability?: ReliabilityBin[]): void {
    this.records.write({ kind: 'eval', ...entry, ...(reliability ? { reliability } : {}) } as Parameters<RunRecords['write']>[0]);
    const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
    const train = typeof entry.trainEce === 'number' ? ` | training batches: accuracy ${pct(entry.trainAccuracy as number)}, ECE ${pct(entry.trainEce)}` : '';
    this.log(
      `eval epoch ${entry.epoch + 1}: ${entry.worker}${entry.role === 'teacher' ? ' (teacher)' : ''} accuracy ${pct(entry.accuracy)} | NLL ${entry.nll.toFixed(4)} | ECE ${pct(entry.ece)}${train}`,
    );
  }

  private async onJoin(peer: Buffer, m: MessageOf<'join'>): Promise<void> {
    let verdict = this.members.judgeJoin(m);
    if (verdict.action === 'welcome-again') return this.welcome(m.member);
    if (verdict.action === 'lost-and-rejoin') {
      // It was training and heard nothing from us for livenessMs (a stalled machine or network):
      // it no longer follows this run's steps, so it is lost, and admitted again below. Not a
      // restart (the same process); one rollback per incident (judgeRejoin).
      const incident = judgeRejoin(this.members.isCaughtUp(m.member), this.recovery.generation, this.members.admittedSince(m.member));
      if (incident === 'welcome-again') return this.welcome(m.member);
      const sameIncident = incident === 'same-incident';
      await this.workerLost({ name: m.member, reason: 'rejoined', detail: 'it lost contact with the coordinator and joined again', counts: false, sameIncident });
      verdict = this.members.judgeJoin(m);
    }
    if (verdict.action === 'reject') {
      this.log(`coordinator: refused '${m.member}': ${verdict.reason}`);
      await this.socket.send(peer, { type: 'reject', reason: verdict.reason, ...(verdict.retryable ? { retryable: true } : {}) }).catch(() => {});
      return;
    }
    if (verdict.action !== 'admit') return;
    const { role } = verdict;
    const returning = this.members.admit(peer, m);
    this.liveness.watch(m.member, Date.now());
    if (returning) {
      // Elastic: back from its last complete checkpoint, at the first step not yet done.
      const latest = await this.checkpoints.latest();
      const at = { step: this.server.nextStep, checkpointStep: latest?.step ?? 0, ...(latest ? { dir: latest.dir } : {}) };
      this.members.setRejoin(m.member, at);
      this.log(
        `coordinator: ${m.member} (${role}) rejoined from ${m.host}, pid ${m.pid}; it restores ${at.dir ? `the checkpoint of step ${at.checkpointStep}` : 'its initial weights'} and continues at step ${at.step}`,
      );
      this.records.event('worker-admitted', {
        worker: m.member,
        role,
        host: m.host,
        pid: m.pid,
        startStep: at.step,
        generation: this.recovery.generation,
        rejoin: true,
        checkpointStep: at.checkpointStep,
      });
    } else {
      this.members.setRejoin(m.member, undefined);
      this.log(`coordinator: ${m.member} (${role}) joined from ${m.host}, pid ${m.pid}${this.resumeAt.step > 0 ? `; it starts at step ${this.resumeAt.step}` : ''}`);
      this.records.event('worker-admitted', {
        worker: m.member,
        role,
        host: m.host,
        pid: m.pid,
        startStep: this.resumeAt.step,
        generation: this.recovery.generation,
        rejoin: false,
      });
    }
    await this.welcome(m.member);
  }

  private async welcome(name: string): Promise<void> {
    const rejoin = this.members.rejoinOf(name);
    const start = rejoin ?? this.resumeAt;
    await this.send(name, {
      type: 'welcome',
      runId: this.config.name,
      member: name,
      members: [...this.members.all],
      startStep: start.step,
      config: this.wireConfig,
      ...(start.dir ? { resume: start.dir } : {}),
      ...(rejoin ? { checkpointStep: rejoin.checkpointStep } : {}),
      generation: this.recovery.generation,
    });
    // Joined during a graceful stop: it checkpoints at the same barrier.
    const stop = this.stop.requested;
    if (stop) await this.send(name, { type: 'stop', step: stop.step, reason: `${stop.signal} to the coordinator` });
  }

  private async onPredictions(name: string, m: MessageOf<'predictions'>): Promise<void> {
    const arrival = this.server.add(name, this.members.roleOf(name)!, m);
    if (arrival.kind === 'already-done') this.log(`coordinator: ignored predictions of ${name} for step ${m.step}, which is already done`);
    if (arrival.kind === 'other-shape') this.log(`coordinator: ignored predictions of ${name} for step ${m.step}: ${arrival.why}`);
    if (arrival.kind !== 'added') return;
    await this.serve(m.step);
  }

  /** Serves a step if it can be; once done, the teachers' windows advance. */
  private async serve(step: number): Promise<void> {
    if (!(await this.server.serve(step, this.recovery.generation, this.send))) return;
    failpoint('coordinator-served', step);
    if (this.members.teachers.length > 0) await this.broadcast(this.members.teachers, { type: 'advance', step });
    if ((step + 1) % this.logEvery === 0 && !this.display.interactive) {
      const losses = this.members.members.map((n) => `${n} ${this.server.lastLoss.get(n)?.toFixed(4) ?? '-'}`).join(' | ');
      this.log(`step ${step + 1} | loss ${losses}`);
    }
  }

  private onEval(name: string, m: MessageOf<'eval'>): void {
    for (const { record, reliability } of this.evaluations.addEval(name, this.members.roleOf(name)!, m)) this.recordEval(record, reliability);
  }

  /** Applies the recovery policy to a lost worker: roll the cohort back, go on without it, or stop the run. */
  /** The worker-lost event of `lost`, at the step and generation the cohort is at. */
  private recordLoss(lost: LostWorker, pid: number, how: { stopped: boolean; counted: boolean; sameIncident?: true }): void {
    this.records.event('worker-lost', {
      worker: lost.name,
      reason: lost.reason,
      detail: lost.detail,
      pid,
      step: this.server.nextStep,
      generation: this.recovery.generation,
      restarts: this.recovery.restarts,
      ...how,
      ...(lost.silentMs === undefined ? {} : { silentMs: lost.silentMs }),
    });
  }

  private async workerLost(lost: LostWorker): Promise<void> {
    const { name, detail } = lost;
    if (!this.members.roleOf(name) || this.members.isAbsent(name)) return;
    if (this.stop.requested) {
      throw new CohortError(`worker ${name} lost during the graceful stop (${detail}); the last complete checkpoint is untouched`, { code: 'STOP_FAILED' });
    }
    const when = new Date().toISOString();
    const counts = lost.counts ?? true;
    const pid = this.members.pidOf(name);
    if (lost.sameIncident ?? this.silentSinceRollback(lost)) {
      // Its process (if silent: hung, or cut off) is stopped and replaced, but uses no restart.
      const stopped = !!lost.stillRunning && pid > 0;
      this.recordLoss(lost, pid, { stopped, counted: false, sameIncident: true });
      this.log(`coordinator: ${name} lost at ${when} (${detail}); the same incident already rolled the cohort back to step ${this.resumeAt.step}: it is welcomed there`);
      this.members.remove(name);
      this.liveness.forget(name);
      if (stopped) this.options.onWorkerLost?.(name, pid);
      return;
    }
    // Elastic: a worker already silent when the last loss was decided is of that incident (no restart).
    const elasticSameIncident =
      this.config.recovery.policy === 'elastic' && lost.silentMs !== undefined && judgeElasticSilence(Date.now(), lost.silentMs, this.lastDecisionAt) === 'same-incident';
    const decision = this.recovery.decide(name, detail, when, counts && !elasticSameIncident, this.server.nextStep);
    this.lastDecisionAt = Date.now();
    const stopped = decision.action !== 'fail' && !!lost.stillRunning && pid > 0;
    this.recordLoss(lost, pid, { stopped, counted: counts && !elasticSameIncident, ...(elasticSameIncident ? { sameIncident: true as const } : {}) });
    if (decision.action === 'fail') throw decision.error;
    this.members.remove(name);
    this.liveness.forget(name);
    if (stopped) this.options.onWorkerLost?.(name, pid);
    if (decision.action === 'continue-without') return this.continueWithout(name, when, detail);
    this.resumeAt = await this.checkpoints.rollbackPoint();
    this.server.rollBack(this.resumeAt.step);
    this.evaluations.rollBack();
    this.checkpoints.rollBack();
    this.members.done.clear();
    this.members.newGeneration();
    const { generation, restarts, maxRestarts } = this.recovery;
    this.log(
      `coordinator: ${name} lost at ${when} (${detail}); rolling the cohort back to step ${this.resumeAt.step} ` +
        `(${this.resumeAt.dir ? `checkpoint ${this.resumeAt.dir}` : 'initial weights: no checkpoint yet'}), generation ${generation}; ` +
        `waiting for ${name} to rejoin (restart ${restarts} of at most ${maxRestarts})`,
    );
    this.records.event('rollback', { worker: name, step: this.resumeAt.step, ...(this.resumeAt.dir ? { checkpoint: this.resumeAt.dir } : {}), generation });
    await this.broadcast(this.members.joined(), {
      type: 'rollback',
      step: this.resumeAt.step,
      ...(this.resumeAt.dir ? { checkpoint: this.resumeAt.dir } : {}),
      generation,
      reason: `${name} lost: ${detail}`,
    });
  }

  /** Whether a silent or unreachable worker has been out of reach since the last rollback, so belongs to its incident (judgeSilence). */
  private silentSinceRollback(lost: LostWorker): boolean {
    if (this.config.recovery.policy !== 'restart' || (lost.reason !== 'silent' && lost.reason !== 'unreachable')) return false;
    return judgeSilence(this.members.isCaughtUp(lost.name), this.recovery.generation, this.members.admittedSince(lost.name)) === 'same-incident';
  }

  /** Elastic: the steps in flight drop the lost worker's predictions and are served by the live ones. */
  private async continueWithout(name: string, when: string, detail: string): Promise<void> {
    this.members.markAbsent(name, Date.now());
    this.server.drop(name, this.members.roleOf(name)!);
    const others = this.members.all.filter((n) => !this.members.isAbsent(n));
    this.log(
      `coordinator: ${name} lost at ${when} (${detail}); elastic: ${others.join(', ')} continue without it from step ${this.server.nextStep}; ` +
        `waiting for ${name} to rejoin from its last checkpoint (restart ${this.recovery.restarts} of at most ${this.recovery.maxRestarts})`,
    );
    this.records.event('continue-without', { worker: name, step: this.server.nextStep, others });
    for (const step of this.server.pending()) await this.serve(step);
  }

  /** Handles one message from a joined worker (of the current generation). */
  private async onMessage(name: string, message: Message): Promise<void> {
    switch (message.type) {
      case 'predictions':
        await this.onPredictions(name, message);
        break;
      case 'evalLogits':
        this.evaluations.addLogits(name, this.members.roleOf(name)!, message);
        break;
      case 'eval':
        this.onEval(name, message);
        break;
      case 'progress': {
        const { type: _, generation: __, totalSteps, ...fields } = message;
        this.records.write({ kind: 'step', worker: name, role: this.members.roleOf(name)!, ...fields });
        this.display.update({ worker: name, totalSteps, ...fields });
        break;
      }
      case 'done':
        this.members.finished(name);
        break;
      case 'checkpointed':
        this.checkpoints.reported(name, message.step);
        break;
      case 'error':
        throw new CohortError(`worker ${name} failed: ${message.message}`, { code: 'WORKER_FAILED' });
      default:
        break;
    }
  }

  /**
   * One turn's checks of time: heartbeats due, and (once every message waiting has been read:
   * `drained`) silent workers and a run with no message at all for too long.
   */
  private async judgeTime(now: number, tick: boolean, drained: boolean): Promise<void> {
    if (this.liveness.heartbeatDue(now)) void this.broadcast(this.members.joined(), { type: 'heartbeat' });
    if (!drained) return;
    for (const { worker, silentMs } of this.liveness.silent(now, this.members.done)) {
      await this.workerLost({ name: worker, reason: 'silent', detail: `no message for ${(silentMs / 1000).toFixed(1)} s`, silentMs, stillRunning: true });
    }
    if (tick && this.liveness.stalled(now)) {
      throw new CohortError(`no message from ${this.members.all.filter((n) => !this.members.done.has(n)).join(', ')} for ${this.config.exchange.timeoutMs / 1000} s; giving up`, {
        code: 'COORDINATOR_TIMEOUT',
      });
    }
  }

  /** The whole run: the loop, then the workers told to shut down, then the outcome recorded. */
  async run(): Promise<RunSummary> {
    const { options } = this;
    let failure: CohortError | undefined;
    // The abort signal wakes the wait in nextArrival instead of being raced as one long-lived
    // promise: each Promise.race on a promise that never settles adds a reaction to it that holds
    // the race's result, so every message received (tensors included) would stay in memory.
    const onAbort = () => this.wake?.();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    options.stopRequest?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.loop();
      await this.shutDown();
    } catch (error) {
      failure = asCohortError(error, 'INTERNAL', 'coordinator: ');
      await this.shutDown(failure);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      options.stopRequest?.removeEventListener('abort', onAbort);
      this.pending?.catch(() => {}); // rejected by the close below
      this.socket.close();
    }
    return this.finish(failure);
  }

  /** The main loop: messages and time in, until every worker is done (or given up on). */
  private async loop(): Promise<void> {
    while (this.members.running() && !this.stop.checkpointed) {
      if (await this.leavesLoop()) return;
      const next = await this.nextArrival();
      const now = Date.now();
      await this.afterWait(now, next === 'tick');
      if (next === 'tick') continue;
      this.pending = undefined;
      await this.dispatch(next.peer, next.message, now);
    }
  }

  /** Whether the loop ends before this turn: a stop with nothing to save, or lost workers given up on; throws a stop overdue. */
  private async leavesLoop(): Promise<boolean> {
    const { stopRequest } = this.options;
    if (stopRequest?.aborted && !this.stop.requested && !(await this.beginStop(String(stopRequest.reason)))) {
      this.stoppedGracefully = true;
      return true;
    }
    if (this.stop.overdue(Date.now())) {
      throw new CohortError(
        `the graceful stop did not complete within ${this.config.exchange.timeoutMs / 1000} s (exchange.timeoutMs); the last complete checkpoint is untouched`,
        {
          code: 'STOP_FAILED',
        },
      );
    }
    // Elastic: every other worker is done; one that does not come back is given up on.
    const late = this.members.givenUp(Date.now(), this.config.exchange.timeoutMs);
    if (late.length === 0) return false;
    this.log(
      `coordinator: ${late.join(', ')} did not rejoin within ${this.config.exchange.timeoutMs / 1000} s of being lost; finishing without ${late.length > 1 ? 'them' : 'it'} (no final weights or last evaluation)`,
    );
    this.records.event('given-up', { workers: late });
    return true;
  }

  /** The next message, or 'tick' after at most 500 ms (or when woken: a loss reported, an abort, a checkpoint's end). */
  private async nextArrival(): Promise<Arrival | 'tick'> {
    this.pending ??= this.socket.receive();
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<'tick'>((resolve) => {
      timer = setTimeout(() => resolve('tick'), 500);
      this.wake = () => resolve('tick');
    });
    throwIfAborted(this.options.signal);
    const next = await Promise.race([this.pending, tick]);
    clearTimeout(timer); // a message usually wins the race: no timer left behind per message
    this.wake = undefined;
    throwIfAborted(this.options.signal);
    return next;
  }

  /**
   * What every turn does before it reads its message: notes a stall of this process, raises a
   * checkpoint's failure, handles the losses reported meanwhile, and (once what is waiting has
   * been read: a tick, or no message queued) judges silences: by arrivals.
   */
  private async afterWait(now: number, tick: boolean): Promise<void> {
    const gapMs = this.liveness.looked(now);
    if (gapMs > 0) {
      this.log(`coordinator: this process did not run for ${(gapMs / 1000).toFixed(1)} s; nobody is blamed for that gap`);
      this.records.event('coordinator-stalled', { gapMs });
    }
    if (this.checkpoints.failure) throw this.checkpoints.failure;
    for (const lost of this.lostQueue.splice(0)) await this.workerLost(lost);
    await this.judgeTime(now, tick, tick || !this.socket.hasQueued());
  }

  /** One message: a heartbeat thread's beat, a join, or a joined worker's message of the current generation. */
  private async dispatch(peer: Buffer, message: Message, now: number): Promise<void> {
    const { members } = this;
    if (message.type === 'heartbeat' && message.member !== undefined && members.nameOf(peer) === undefined) {
      // A worker's heartbeat thread: its own socket, named by member and pid (a lost worker's
      // thread beats until its process joins again: not counted, not logged).
      const beating = members.heartbeatOf(message);
      this.liveness.arrived(now, beating);
      if (beating !== undefined) this.socket.send(peer, { type: 'heartbeat' }).catch(() => {});
      return;
    }
    const name = message.type === 'join' ? undefined : members.nameOf(peer);
    this.liveness.arrived(now, name);
    if (message.type === 'join') return this.onJoin(peer, message);
    if (name === undefined) {
      this.log(`coordinator: ignored a ${message.type} message from ${peerName(peer)}, which has not joined`);
      return;
    }
    members.heardFrom(name);
    if ('generation' in message && this.recovery.isStale(message.generation)) return; // sent before a rollback
    if ('generation' in message && (message.generation ?? 0) === this.recovery.generation) members.followsGeneration(name);
    await this.onMessage(name, message);
  }

  /** Tells every worker to shut down: the run complete or stopped, or (with `failure`) why it failed. */
  private async shutDown(failure?: CohortError): Promise<void> {
    if (failure) {
      this.display.stop();
      await this.broadcast(this.members.all, { type: 'shutdown', reason: failure.message }).catch(() => {});
      await this.socket.flush();
      return;
    }
    await this.checkpoints.settled();
    if (this.checkpoints.failure) throw this.checkpoints.failure;
    if (this.stop.checkpointed) this.stoppedGracefully = true;
    const stopped = this.stoppedGracefully ? this.stop.requested : undefined;
    await this.broadcast(this.members.all, {
      type: 'shutdown',
      reason: stopped ? `the run was stopped (${stopped.signal}) at step ${stopped.step}; it continues with --resume` : 'the run is complete',
    });
    await this.socket.flush();
    this.display.stop();
  }

  /** Records how the run ended and returns its summary, or throws its failure. */
  private finish(failure: CohortError | undefined): RunSummary {
    const { served: steps } = this.server;
    const { restarts } = this.recovery;
    const stopped = failure || !this.stoppedGracefully ? undefined : this.stoppedAt(this.stop.requested!.signal);
    try {
      const checkpointStep = stopped?.checkpointStep === undefined ? {} : { checkpointStep: stopped.checkpointStep };
      this.records.event(
        'run-finished',
        failure
          ? { outcome: 'failed', steps, restarts, code: failure.code, message: failure.message }
          : stopped
            ? { outcome: 'stopped', steps, restarts, ...checkpointStep }
            : { outcome: 'complete', steps, restarts },
      );
    } catch (error) {
      failure ??= asCohortError(error, 'FILE_UNWRITABLE', '');
    }
    if (failure) throw failure;
    return {
      runDir: this.runDir,
      final: this.evaluations.finalRecords([...this.members.all, 'ensemble']),
      steps,
      dropped: this.socket.dropped,
      restarts,
      ...(stopped ? { stopped } : {}),
    };
  }

  /** A stop asked for: tells the workers where to checkpoint; returns false when the run ends now (nothing trained since it started). */
  private async beginStop(signal: string): Promise<boolean> {
    const decision = this.stop.request(signal, this.server.highestServed, this.resumeAt.step, Date.now());
    if (decision.action === 'ignore') return true;
    const step = this.stop.requested!.step;
    this.records.event('stop-requested', { signal, step });
    if (decision.action === 'end-now') {
      this.log(`coordinator: ${signal}: stopping; nothing was trained since step ${step}, so there is nothing new to save`);
      return false;
    }
    this.log(`coordinator: ${signal}: stopping gracefully: every member checkpoints at step ${step}, then the workers exit (a second signal stops at once, without a checkpoint)`);
    await this.broadcast(this.members.joined(), { type: 'stop', step, reason: `${signal} to the coordinator` });
    return true;
  }

  /** What a stopped run resumes from: the stop's checkpoint, or the one it started from. */
  private stoppedAt(signal: string): { signal: string; checkpointStep?: number } {
    if (this.stop.checkpointed) return { signal, checkpointStep: this.stop.requested!.step };
    return this.resumeAt.dir ? { signal, checkpointStep: this.resumeAt.step } : { signal };
  }
}

/** Throws the abort reason (an Error as is, anything else as a CohortError) once `signal` has aborted. */
function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new CohortError(String(signal.reason), { code: 'ABORTED' });
}

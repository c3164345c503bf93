/**
 * A worker's link to the coordinator: the DEALER socket, the join (asked again until welcomed
 * or refused), heartbeats, the coordinator's liveness, and the control messages that can
 * arrive at any time (rollback, shutdown, error, a new welcome, advance). The rules for a
 * control message are a pure function (judgeControl), tested without sockets.
 */
import { hostname } from 'node:os';
import { CohortError } from '../shared/errors.js';
import { PROTOCOL_VERSION, type Message, type MessageOf } from '../shared/protocol/messages.js';
import { ReceiveTimeout, type WorkerSocket } from '../shared/protocol/sockets.js';
import { CoordinatorLiveness } from './liveness.js';
import { TeacherWindow } from './teacher-window.js';

export interface JoinOptions {
  member: string;
  connect: string;
  backend?: string;
  gpu?: number;
}

/** Thrown out of a step when the coordinator rolls the cohort back. */
export class Rollback extends Error {
  /** `checkpointStep`: an elastic re-admission restores this step's checkpoint and continues at `rollback.step`. */
  constructor(
    readonly rollback: MessageOf<'rollback'>,
    readonly checkpointStep?: number,
  ) {
    super(`rollback to step ${rollback.step}`);
  }
}

/** Thrown when the coordinator shuts the worker down after a graceful stop (`stop`): a clean end. */
export class Stopped extends Error {}

/** Thrown when the coordinator has been silent (heartbeats included) for `livenessMs`. */
export class CoordinatorLost extends Error {}

/** What a welcome tells a worker to do; a welcome that says something else re-admits it. */
export const admission = (w: MessageOf<'welcome'>) => `${w.generation ?? 0}:${w.startStep}:${w.resume ?? ''}:${w.checkpointStep ?? ''}`;

/** What the link knows when it judges a control message. */
export interface ControlState {
  member: string;
  generation: number;
  /** The welcome this worker follows (admission()): the same again is a duplicate answer to a join. */
  admitted: string;
  /** A graceful stop's barrier, once the coordinator asked for one: its shutdown is then a clean end. */
  stopAt?: number;
}

export type ControlVerdict =
  /** Not a control message: the caller's to handle. */
  | { kind: 'not-control' }
  /** A heartbeat, a stale message, a duplicate answer: nothing to do. */
  | { kind: 'ignore' }
  | { kind: 'advance'; step: number }
  /** A graceful stop: checkpoint at `step` (members), then await the shutdown. */
  | { kind: 'stop-at'; step: number }
  /** The shutdown that ends a graceful stop. */
  | { kind: 'stopped' }
  | { kind: 'rollback'; rollback: MessageOf<'rollback'>; checkpointStep?: number; admitted?: string }
  | { kind: 'stop'; error: CohortError };

/** The rules for a message that may be a control message. */
export function judgeControl(state: ControlState, message: Message): ControlVerdict {
  const who = state.member;
  if (message.type === 'rollback') return message.generation > state.generation ? { kind: 'rollback', rollback: message } : { kind: 'ignore' };
  if (message.type === 'stop') return { kind: 'stop-at', step: message.step };
  if (message.type === 'shutdown' && state.stopAt !== undefined) return { kind: 'stopped' };
  if (message.type === 'shutdown') return { kind: 'stop', error: new CohortError(`${who}: the coordinator stopped the run: ${message.reason}`, { code: 'COORDINATOR_STOPPED' }) };
  if (message.type === 'error') return { kind: 'stop', error: new CohortError(`${who}: the coordinator failed: ${message.message}`, { code: 'COORDINATOR_FAILED' }) };
  if (message.type === 'welcome' && admission(message) !== state.admitted && (message.generation ?? 0) >= state.generation) {
    // The coordinator declared this worker lost (it was slow) and has admitted it again, from
    // another step: follow the new welcome.
    const { startStep: step, resume: checkpoint, generation = 0, checkpointStep } = message;
    return {
      kind: 'rollback',
      rollback: { type: 'rollback', step, ...(checkpoint ? { checkpoint } : {}), generation, reason: 'the coordinator admitted this worker again' },
      checkpointStep,
      admitted: admission(message),
    };
  }
  // Heartbeats, and answers to a join sent again while the first answer was on its way.
  if (message.type === 'heartbeat' || message.type === 'welcome' || (message.type === 'reject' && message.retryable)) return { kind: 'ignore' };
  // A teaching signal of an older generation was sent before a rollback: stale.
  if (message.type === 'teaching' && (message.generation ?? 0) < state.generation) return { kind: 'ignore' };
  // Wherever it arrives (between steps too: a teacher slower than its students gets them while
  // it computes), an advance moves the teacher's window; dropping one could stall the cohort.
  if (message.type === 'advance') return { kind: 'advance', step: message.step };
  return { kind: 'not-control' };
}

/** What the link needs of its socket (a WorkerSocket; a fake in tests). */
export type LinkSocket = Pick<WorkerSocket, 'member' | 'send' | 'receive' | 'poll'>;

export class Link implements ControlState {
  readonly member: string;
  generation = 0;
  admitted = '';
  stopAt: number | undefined;
  liveness: CoordinatorLiveness;
  /** Teachers: how far ahead of the students they may run. */
  window: TeacherWindow;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: LinkSocket,
    private readonly clock: () => number = Date.now,
  ) {
    this.member = socket.member;
    this.liveness = new CoordinatorLiveness(Infinity, clock());
    this.window = new TeacherWindow(0);
  }

  /** Sends a join until the coordinator answers with a welcome (or refuses), for at most `timeoutMs`. */
  async join(options: JoinOptions, timeoutMs: number): Promise<MessageOf<'welcome'>> {
    const deadline = this.clock() + timeoutMs;
    for (;;) {
      await this.socket.send({
        type: 'join',
        protocolVersion: PROTOCOL_VERSION,
        member: options.member,
        backend: options.backend ?? 'config',
        device: options.gpu === undefined ? '' : `gpu ${options.gpu}`,
        pid: process.pid,
        host: hostname(),
      });
      // Ask again every 2 s: a coordinator that is (re)starting has not seen the first join.
      const resend = this.clock() + Math.min(2000, Math.max(0, deadline - this.clock()));
      while (this.clock() < resend) {
        let answer: Message;
        try {
          answer = await this.socket.receive(Math.max(1, resend - this.clock()));
        } catch (error) {
          if (error instanceof ReceiveTimeout) break;
          throw error;
        }
        if (answer.type === 'reject' && !answer.retryable) throw new CohortError(`the coordinator refused worker ${options.member}: ${answer.reason}`, { code: 'JOIN_REFUSED' });
        if (answer.type === 'welcome') return answer;
        if (answer.type === 'reject') {
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, resend - this.clock())));
          break;
        }
        // Anything else was sent to this member before the coordinator restarted: stale.
      }
      if (this.clock() >= deadline)
        throw new CohortError(`worker ${options.member}: no welcome from the coordinator at ${options.connect} within ${timeoutMs / 1000} s`, { code: 'NO_WELCOME' });
    }
  }

  /** Follows a welcome: its generation and admission; the coordinator counts as heard from now. */
  follow(welcome: MessageOf<'welcome'>): void {
    this.generation = welcome.generation ?? 0;
    this.admitted = admission(welcome);
    this.liveness.arrived(this.clock());
  }

  /**
   * Starts the run's liveness rules and heartbeats (from the welcome on: loading the backend and
   * data can take longer than livenessMs). `heardElsewhere`: when the heartbeat thread last heard
   * from the coordinator; `link`: when its connection last showed the coordinator's process
   * alive, and for how long after its last message that counts (heartbeats.ts, CoordinatorLiveness).
   */
  start(recovery: { livenessMs: number; heartbeatMs: number }, teacherWindow: number, heardElsewhere?: () => number, link?: { alive: () => number; hangMs: number }): void {
    this.liveness = new CoordinatorLiveness(recovery.livenessMs, this.clock(), heardElsewhere, link);
    this.window = new TeacherWindow(teacherWindow);
    this.heartbeat = setInterval(() => void this.socket.send({ type: 'heartbeat' }).catch(() => {}), recovery.heartbeatMs);
    this.heartbeat.unref();
  }

  stop(): void {
    clearInterval(this.heartbeat);
  }

  send(message: Message, options?: { float16: boolean }): Promise<void> {
    return this.socket.send(message, options);
  }

  /** Applies the control rules to a message: throws a Rollback or the stop error; returns whether it was a control message. */
  control(message: Message): boolean {
    const verdict = judgeControl(this, message);
    switch (verdict.kind) {
      case 'rollback':
        if (verdict.admitted !== undefined) this.admitted = verdict.admitted;
        throw new Rollback(verdict.rollback, verdict.checkpointStep);
      case 'stop':
        throw verdict.error;
      case 'stop-at':
        this.stopAt = verdict.step;
        return true;
      case 'stopped':
        throw new Stopped('the coordinator shut this worker down after a graceful stop');
      case 'advance':
        this.window.advance(verdict.step);
        return true;
      case 'ignore':
        return true;
      case 'not-control':
        return false;
    }
  }

  /** The next message from the coordinator, or CoordinatorLost once it has been silent for livenessMs. */
  async receive(): Promise<Message> {
    for (;;) {
      try {
        const message = await this.socket.receive(this.liveness.waitMs(this.clock()));
        this.liveness.arrived(this.clock());
        return message;
      } catch (error) {
        if (!(error instanceof ReceiveTimeout)) throw error;
        // A process that was not scheduled for a while runs its timers before it reads its
        // sockets: the timeout can fire with a message already waiting. Read it before judging.
        const waiting = await this.socket.poll();
        if (waiting) {
          this.liveness.arrived(this.clock());
          return waiting;
        }
        // The heartbeat thread may have heard from the coordinator meanwhile: judged by arrivals.
        const now = this.clock();
        if (this.liveness.lost(now)) throw new CoordinatorLost(`no message from the coordinator for ${(this.liveness.silentMs(now) / 1000).toFixed(0)} s`);
      }
    }
  }

  /** The next message that is not a control message or stale. */
  async expect(): Promise<Message> {
    for (;;) {
      const message = await this.receive();
      if (!this.control(message)) return message;
    }
  }

  /** Between steps: handles whatever control messages have arrived, without waiting. */
  async poll(): Promise<void> {
    for (let message = await this.socket.poll(); message; message = await this.socket.poll()) {
      this.liveness.arrived(this.clock());
      if (!this.control(message)) throw new CohortError(`${this.member}: unexpected ${message.type} message between steps`, { code: 'PROTOCOL_MISMATCH' });
    }
    const now = this.clock();
    if (this.liveness.lost(now)) throw new CoordinatorLost(`no message from the coordinator for ${(this.liveness.silentMs(now) / 1000).toFixed(0)} s`);
  }

  /** At the end: waits for the coordinator's shutdown (control messages still apply). */
  async awaitShutdown(): Promise<void> {
    for (;;) {
      const message = await this.receive();
      if (message.type === 'shutdown') return;
      this.control(message);
    }
  }
}

/**
 * Who is in the run: the workers the config names and their roles, which process joined as
 * which, which have finished, and (elastic policy) which are lost and not yet back. Admission
 * is a rule on a join message and this state (judgeJoin); the caller sends the answer.
 */
import { PROTOCOL_VERSION, type MessageOf } from '../shared/protocol/messages.js';

export type Role = 'member' | 'teacher';

/** What to do with a join. */
export type JoinVerdict =
  | { action: 'reject'; reason: string; retryable: boolean }
  /** The same process asking again before it did anything else: its first answer was slow. */
  | { action: 'welcome-again' }
  /** The same process, which was training: it lost contact with us; it is lost, then admitted. */
  | { action: 'lost-and-rejoin' }
  | { action: 'admit'; role: Role };

/** Where a returning worker (elastic) was told to start. */
export interface RejoinPoint {
  step: number;
  dir?: string;
  checkpointStep: number;
}

export class Membership {
  readonly members: readonly string[];
  readonly teachers: readonly string[];
  /** Every worker, members first, in config order. */
  readonly all: readonly string[];
  private readonly roles: Map<string, Role>;
  private readonly peers = new Map<string, Buffer>();
  /** Which worker a peer (routing id, hex) joined as. */
  private readonly byPeer = new Map<string, string>();
  /** `host:pid` of each joined worker's process. */
  private readonly processes = new Map<string, string>();
  /** Joined workers that have sent something since their welcome (a join again from them is not a retransmission). */
  private readonly active = new Set<string>();
  /** Joined workers that have sent a message of the current generation (cleared by a rollback). */
  private readonly caughtUp = new Set<string>();
  /** Workers admitted since the last rollback. */
  private readonly admittedSinceRollback = new Set<string>();
  /** Workers that said `done`. */
  readonly done = new Set<string>();
  /** Elastic policy: workers lost and not yet back, with when they were lost. */
  readonly absent = new Map<string, { since: number }>();
  /** Elastic rejoins: where each returning worker was told to start (answered again if it asks again). */
  private readonly rejoins = new Map<string, RejoinPoint>();

  constructor(
    readonly run: string,
    members: readonly string[],
    teachers: readonly string[],
  ) {
    this.members = members;
    this.teachers = teachers;
    this.all = [...members, ...teachers];
    this.roles = new Map<string, Role>([...members.map((n) => [n, 'member'] as const), ...teachers.map((n) => [n, 'teacher'] as const)]);
  }

  roleOf(name: string): Role | undefined {
    return this.roles.get(name);
  }

  /** The admission rule: protocol version, run id, a known name and role, one process per name. */
  judgeJoin(m: MessageOf<'join'>): JoinVerdict {
    const reject = (reason: string, retryable = false): JoinVerdict => ({ action: 'reject', reason, retryable });
    if (m.protocolVersion !== PROTOCOL_VERSION) return reject(`protocol version ${m.protocolVersion}; this coordinator speaks version ${PROTOCOL_VERSION}`);
    if (m.runId !== undefined && m.runId !== this.run) return reject(`this coordinator runs '${this.run}', not '${m.runId}'`);
    const role = this.roles.get(m.member);
    if (!role) return reject(`no member or teacher named '${m.member}' in run '${this.run}' (expected ${this.all.join(', ')})`);
    if (m.role !== undefined && m.role !== role && !(m.role === 'student' && role === 'member')) return reject(`'${m.member}' is a ${role} in this run, not a ${m.role}`);
    if (this.peers.has(m.member) && this.processes.get(m.member) === processOf(m)) {
      return this.active.has(m.member) ? { action: 'lost-and-rejoin' } : { action: 'welcome-again' };
    }
    // Another process under a live worker's name: refused until that worker is declared lost
    // (it died, or it has been silent for livenessMs); a restarted worker keeps asking.
    if (this.peers.has(m.member)) return reject(`'${m.member}' has already joined (from ${this.processes.get(m.member)})`, true);
    return { action: 'admit', role };
  }

  /** Records an admitted join; returns whether the worker was absent (an elastic return). */
  admit(peer: Buffer, m: MessageOf<'join'>): boolean {
    this.peers.set(m.member, peer);
    this.byPeer.set(peer.toString('hex'), m.member);
    this.processes.set(m.member, processOf(m));
    this.admittedSinceRollback.add(m.member);
    return this.absent.delete(m.member);
  }

  /** The worker a peer joined as, if it did. */
  nameOf(peer: Buffer): string | undefined {
    return this.byPeer.get(peer.toString('hex'));
  }

  peerOf(name: string): Buffer | undefined {
    return this.peers.get(name);
  }

  isJoined(name: string): boolean {
    return this.peers.has(name);
  }

  joined(): string[] {
    return [...this.peers.keys()];
  }

  /** The pid of a joined worker's process (0 when unknown). */
  pidOf(name: string): number {
    const pid = Number(this.processes.get(name)?.split(':').pop());
    return pid > 0 ? pid : 0;
  }

  /** A message from a joined worker: it is no longer waiting for its first answer. */
  heardFrom(name: string): void {
    this.active.add(name);
  }

  /** The worker whose heartbeat thread sent `m` (its member name and the pid it joined with), if joined. */
  heartbeatOf(m: { member?: string; pid?: number }): string | undefined {
    return m.member !== undefined && m.pid !== undefined && m.pid > 0 && this.pidOf(m.member) === m.pid ? m.member : undefined;
  }

  /** `name` sent a message of the current generation: it follows the last rollback. */
  followsGeneration(name: string): void {
    this.caughtUp.add(name);
  }

  /** Whether `name` was admitted since the last rollback. */
  admittedSince(name: string): boolean {
    return this.admittedSinceRollback.has(name);
  }

  /** Whether `name` has sent a message of the current generation. */
  isCaughtUp(name: string): boolean {
    return this.caughtUp.has(name);
  }

  /** A rollback: nobody has sent a message of the new generation yet. */
  newGeneration(): void {
    this.caughtUp.clear();
    this.admittedSinceRollback.clear();
  }

  finished(name: string): void {
    this.done.add(name);
  }

  /** A lost worker leaves: its process, peer and activity are forgotten. */
  remove(name: string): void {
    const peer = this.peers.get(name);
    if (peer) this.byPeer.delete(peer.toString('hex'));
    this.peers.delete(name);
    this.processes.delete(name);
    this.active.delete(name);
    this.caughtUp.delete(name);
  }

  /** Elastic: a lost worker the others go on without. */
  markAbsent(name: string, since: number): void {
    this.absent.set(name, { since });
    this.done.delete(name);
  }

  isAbsent(name: string): boolean {
    return this.absent.has(name);
  }

  /** The workers of `names` a step waits for: all, less those lost under the elastic policy. */
  live(names: readonly string[]): string[] {
    return names.filter((n) => !this.absent.has(n));
  }

  setRejoin(name: string, at: RejoinPoint | undefined): void {
    if (at) this.rejoins.set(name, at);
    else this.rejoins.delete(name);
  }

  rejoinOf(name: string): RejoinPoint | undefined {
    return this.rejoins.get(name);
  }

  /** Whether the run's loop goes on: someone is neither done nor absent, or someone absent may come back. */
  running(): boolean {
    return this.done.size + this.absent.size < this.all.length || this.absent.size > 0;
  }

  /**
   * Elastic: once every other worker is done, the absent ones that have been gone longer than
   * `timeoutMs` at `now`; the run finishes without them when that is all of them (else []).
   */
  givenUp(now: number, timeoutMs: number): string[] {
    if (this.absent.size === 0 || this.done.size + this.absent.size !== this.all.length) return [];
    const late = [...this.absent].filter(([, a]) => now - a.since > timeoutMs).map(([n]) => n);
    return late.length === this.absent.size ? late : [];
  }
}

function processOf(m: MessageOf<'join'>): string {
  return `${m.host}:${m.pid}`;
}

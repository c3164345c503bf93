/**
 * The main thread's side of a worker's heartbeat thread (heartbeat-thread.ts): starts it, ticks
 * the shared clock while the main thread's event loop turns, and reads when the coordinator was
 * last heard from off the main thread.
 */
import { Worker } from 'node:worker_threads';
import type { WorkerKeys } from '../shared/protocol/curve.js';

/** Slots of the shared clock (ms since the epoch). */
export const CLOCK_COORDINATOR = 0;
export const CLOCK_MAIN = 1;
/** The last time the thread's connection was up with ZeroMQ's pings answered within linkTimeoutMs. */
export const CLOCK_LINK = 2;

/** How long the heartbeat thread's connection waits for ZeroMQ's pings to be answered before ZeroMQ closes it. */
export const linkTimeoutMs = (heartbeatMs: number) => Math.max(2000, 3 * heartbeatMs);

export interface HeartbeatThreadData {
  connect: string;
  member: string;
  pid: number;
  curve?: WorkerKeys;
  heartbeatMs: number;
  /** A main thread that has not ticked for this long is hung: no more heartbeats. */
  hangMs: number;
  clock: SharedArrayBuffer;
}

const fromSource = import.meta.url.endsWith('.ts');
const threadFile = new URL(`./heartbeat-thread${fromSource ? '.ts' : '.js'}`, import.meta.url);

/** The thread: compiled, its .js file; from TypeScript source (tsx), a bootstrap that registers tsx in the thread first (a thread does not inherit the loader). */
function startThread(workerData: HeartbeatThreadData): Worker {
  if (!fromSource) return new Worker(threadFile, { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(threadFile.href)}); });`;
  return new Worker(code, { eval: true, workerData });
}

export class HeartbeatThread {
  private readonly clock = new BigInt64Array(new SharedArrayBuffer(24));
  private readonly thread: Worker;
  private readonly tick: NodeJS.Timeout;

  /** `onError`: the thread failed (the main socket's heartbeats and arrivals still count). */
  constructor(options: Omit<HeartbeatThreadData, 'clock' | 'pid'>, onError: (error: Error) => void = () => {}) {
    const now = BigInt(Date.now());
    Atomics.store(this.clock, CLOCK_COORDINATOR, 0n);
    Atomics.store(this.clock, CLOCK_LINK, 0n);
    Atomics.store(this.clock, CLOCK_MAIN, now);
    const { connect, member, curve, heartbeatMs, hangMs } = options;
    const workerData: HeartbeatThreadData = { connect, member, ...(curve ? { curve } : {}), heartbeatMs, hangMs, pid: process.pid, clock: this.clock.buffer as SharedArrayBuffer };
    this.linkTimeout = heartbeatMs + linkTimeoutMs(heartbeatMs);
    this.thread = startThread(workerData);
    this.thread.unref();
    this.thread.on('error', onError);
    this.tick = setInterval(() => Atomics.store(this.clock, CLOCK_MAIN, BigInt(Date.now())), Math.max(50, Math.floor(options.heartbeatMs / 2)));
    this.tick.unref();
  }

  /** When the thread last received a message from the coordinator (0: never). */
  heardAt(): number {
    return Number(Atomics.load(this.clock, CLOCK_COORDINATOR));
  }

  /**
   * The last time the coordinator's process is known to have been alive from ZeroMQ's pings on
   * the thread's connection (0: never): the connection was up then, so a ping (sent every
   * heartbeatMs) had been answered within linkTimeoutMs before. Its I/O thread answers while its
   * main thread is busy.
   */
  linkAliveAt(): number {
    const up = Number(Atomics.load(this.clock, CLOCK_LINK));
    return up === 0 ? 0 : up - this.linkTimeout;
  }

  private readonly linkTimeout: number;

  /** Stops the thread and waits for it to close its socket and end (a process that exits with a ZeroMQ socket open in a thread aborts). */
  async stop(): Promise<void> {
    clearInterval(this.tick);
    if (this.stopped) return this.stopped;
    const exited = new Promise<void>((resolve) => this.thread.once('exit', () => resolve()));
    this.thread.postMessage('stop');
    const timer = setTimeout(() => void this.thread.terminate(), 2000);
    this.stopped = exited.finally(() => clearTimeout(timer));
    return this.stopped;
  }

  private stopped: Promise<void> | undefined;
}

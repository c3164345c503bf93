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

const threadFile = new URL(`./heartbeat-thread${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

export class HeartbeatThread {
  private readonly clock = new BigInt64Array(new SharedArrayBuffer(16));
  private readonly thread: Worker;
  private readonly tick: NodeJS.Timeout;

  constructor(options: Omit<HeartbeatThreadData, 'clock' | 'pid'>) {
    const now = BigInt(Date.now());
    Atomics.store(this.clock, CLOCK_COORDINATOR, 0n);
    Atomics.store(this.clock, CLOCK_MAIN, now);
    const workerData: HeartbeatThreadData = { ...options, pid: process.pid, clock: this.clock.buffer as SharedArrayBuffer };
    this.thread = new Worker(threadFile, { workerData });
    this.thread.unref();
    this.thread.on('error', () => {}); // the main socket's liveness still applies
    this.tick = setInterval(() => Atomics.store(this.clock, CLOCK_MAIN, BigInt(Date.now())), Math.max(50, Math.floor(options.heartbeatMs / 2)));
    this.tick.unref();
  }

  /** When the thread last received a message from the coordinator (0: never). */
  heardAt(): number {
    return Number(Atomics.load(this.clock, CLOCK_COORDINATOR));
  }

  stop(): void {
    clearInterval(this.tick);
    this.thread.postMessage('stop');
  }
}

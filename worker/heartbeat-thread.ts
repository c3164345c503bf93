/**
 * A worker's heartbeat thread (a worker_threads thread, started by heartbeats.ts): its own
 * DEALER socket to the coordinator, a heartbeat naming the member and process every
 * `heartbeatMs` whatever the main thread computes (a wasm step blocks it for seconds), and the
 * time each message from the coordinator arrived, written to the shared clock the main thread
 * reads. A main thread that has not ticked for `hangMs` is hung: the thread stops beating, so
 * the coordinator declares the worker lost. ZeroMQ pings the coordinator on this connection
 * every heartbeatMs and closes it when they go unanswered for linkTimeoutMs; while it is up,
 * the thread writes the time (CLOCK_LINK): the coordinator's process is alive even when its
 * main thread, busy, sends nothing.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { WorkerSocket } from '../shared/protocol/sockets.js';
import type { HeartbeatThreadData } from './heartbeats.js';
import { CLOCK_COORDINATOR, CLOCK_LINK, CLOCK_MAIN, linkTimeoutMs } from './heartbeats.js';

const data = workerData as HeartbeatThreadData;
const clock = new BigInt64Array(data.clock);
const socket = new WorkerSocket(data.member, {
  ...(data.curve ? { curve: data.curve } : {}),
  zmtpHeartbeats: { intervalMs: data.heartbeatMs, timeoutMs: linkTimeoutMs(data.heartbeatMs) },
});
let linkUp = false;
socket.socket.events.on('handshake', () => (linkUp = true));
socket.socket.events.on('disconnect', () => (linkUp = false));
socket.connect(data.connect);
const beat = setInterval(() => {
  if (linkUp) Atomics.store(clock, CLOCK_LINK, BigInt(Date.now()));
  if (Date.now() - Number(Atomics.load(clock, CLOCK_MAIN)) > data.hangMs) return;
  socket.send({ type: 'heartbeat', member: data.member, pid: data.pid }).catch(() => {});
}, data.heartbeatMs);
parentPort?.on('message', () => {
  clearInterval(beat);
  socket.close();
  parentPort?.close();
});
for (;;) {
  try {
    await socket.receive();
    Atomics.store(clock, CLOCK_COORDINATOR, BigInt(Date.now()));
  } catch {
    if (socket.socket.closed) break;
  }
}

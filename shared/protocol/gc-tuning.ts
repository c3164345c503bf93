/**
 * The garbage-collector setting of every process that streams tensors over ZeroMQ (the
 * coordinator, the workers, the exchange bench): V8's incremental marking off.
 *
 * Why: zeromq.js hands each received message over without copying and reports its size to V8
 * as external memory. Once that grows past V8's external limit (64 MB since the last full GC;
 * the coordinator of a K = 4 cohort at 256x1000 logits receives 4 MiB a step), V8 starts an
 * incremental mark, and while one is running every further report (every received message)
 * performs a marking step of 5-10 ms on the main thread. Without incremental marking the same
 * pressure costs one atomic mark-compact of the (small) heap instead. Measured with
 * `npm run bench -- exchange` (K = 4, 256x1000, 300 steps, 2-core VM): the coordinator's
 * exchange went from 8.8-17.5 ms to 4.6-6.5 ms a step.
 *
 * V8 reads the flag when it decides to start a mark, so setting it at run time (before the
 * first socket) takes effect; it is set once per process and never turned back on.
 */
import { setFlagsFromString } from 'node:v8';

let tuned = false;

/** Turns V8's incremental marking off for this process (idempotent). */
export function tuneGcForStreaming(): void {
  if (tuned) return;
  setFlagsFromString('--no-incremental-marking');
  tuned = true;
}

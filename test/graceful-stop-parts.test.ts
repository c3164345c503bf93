/**
 * The graceful stop's rules, without sockets or processes: the step barrier after the step in
 * flight, what a request decides, when the stop is complete or overdue, the exit codes, the
 * workers' control rules for `stop` and the shutdown after it, when a member stops training,
 * the lifeline on standard input, and the highest step served that the barrier follows.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { algorithmEntry } from '../shared/algorithms/registry.js';
import { StepServer } from '../coordinator/step-server.js';
import { EXIT_STOPPED, GracefulStop, signalExitCode } from '../coordinator/stop.js';
import type { MessageOf } from '../shared/protocol/messages.js';
import { stopDue } from '../worker/hooks.js';
import { EXIT_LAUNCHER_GONE, holdLifeline } from '../worker/lifeline.js';
import { judgeControl, Link, Stopped, type LinkSocket } from '../worker/link.js';

describe('the coordinator: the stop rules', () => {
  test('the barrier is the step after the one in flight, never before the start step + 1', () => {
    // Step 9 served to some member: it may have started step 10, so all checkpoint after step 10.
    assert.equal(GracefulStop.barrier(9, 0), 11);
    assert.equal(GracefulStop.barrier(-1, 0), 1);
    assert.equal(GracefulStop.barrier(19, 20), 21);
  });

  test('a request: checkpoint at the barrier; nothing trained since the start: end now; a second: ignored', () => {
    const stop = new GracefulStop(1000);
    assert.deepEqual(stop.request('SIGTERM', 29, 20, 0), { action: 'checkpoint-at', step: 31 });
    assert.deepEqual(stop.requested, { signal: 'SIGTERM', step: 31, at: 0 });
    assert.deepEqual(stop.request('SIGINT', 40, 20, 10), { action: 'ignore' });
    assert.deepEqual(new GracefulStop(1000).request('SIGINT', 19, 20, 0), { action: 'end-now' });
    assert.deepEqual(new GracefulStop(1000).request('SIGINT', -1, 0, 0), { action: 'end-now' });
  });

  test('complete only with the checkpoint of the barrier; overdue past the deadline until then', () => {
    const stop = new GracefulStop(1000);
    assert.equal(stop.completed(20), false, 'no stop asked');
    assert.equal(stop.overdue(5000), false);
    stop.request('SIGTERM', 29, 0, 100);
    assert.equal(stop.completed(30), false, 'a regular checkpoint before the barrier');
    assert.equal(stop.overdue(1100), false);
    assert.equal(stop.overdue(1101), true);
    assert.equal(stop.completed(31), true);
    assert.equal(stop.overdue(9999), false);
  });

  test('exit codes: 75 (EX_TEMPFAIL) for a graceful stop, 128 + the signal for a stop at once', () => {
    assert.equal(EXIT_STOPPED, 75);
    assert.equal(signalExitCode('SIGINT'), 130);
    assert.equal(signalExitCode('SIGTERM'), 143);
  });

  test('the step server: the highest step served, reset by a rollback', async () => {
    const server = new StepServer({ members: ['a', 'b'], teachers: [], rule: algorithmEntry('dml').teaching, isLive: () => true });
    assert.equal(server.highestServed, -1);
    const predictions = (step: number): MessageOf<'predictions'> => ({
      type: 'predictions',
      step,
      epoch: 0,
      batch: step,
      indices: { dtype: 'uint32', shape: [1], data: new Uint32Array([step]) },
      probs: { dtype: 'float32', shape: [1, 2], data: new Float32Array([0.5, 0.5]) },
      negEntropy: -0.69,
    });
    for (const step of [0, 1]) {
      server.add('a', 'member', predictions(step));
      server.add('b', 'member', predictions(step));
      assert.equal(await server.serve(step, 0, async () => {}), true);
    }
    assert.equal(server.highestServed, 1);
    server.add('a', 'member', predictions(2)); // in flight, not served
    assert.equal(server.highestServed, 1);
    server.rollBack(0);
    assert.equal(server.highestServed, -1);
  });
});

describe('the worker: stop and the shutdown after it', () => {
  const state = { member: 'a', generation: 0, admitted: '' };
  const shutdown: MessageOf<'shutdown'> = { type: 'shutdown', reason: 'x' };

  test('a stop names the barrier; the shutdown after it is a clean end, without it an error', () => {
    assert.deepEqual(judgeControl(state, { type: 'stop', step: 31, reason: 'SIGTERM' }), { kind: 'stop-at', step: 31 });
    assert.deepEqual(judgeControl({ ...state, stopAt: 31 }, shutdown), { kind: 'stopped' });
    const verdict = judgeControl(state, shutdown);
    assert.equal(verdict.kind, 'stop');
    assert.equal(verdict.kind === 'stop' && verdict.error.code, 'COORDINATOR_STOPPED');
  });

  test('the link keeps the barrier, and throws Stopped at the shutdown', () => {
    const link = new Link({ member: 'a' } as unknown as LinkSocket);
    assert.equal(link.control({ type: 'stop', step: 31, reason: 'SIGTERM' }), true);
    assert.equal(link.stopAt, 31);
    assert.throws(() => link.control(shutdown), Stopped);
  });

  test('a member stops after the step before the barrier, never after the last step', () => {
    assert.equal(stopDue(undefined, 30, 60), false);
    assert.equal(stopDue(31, 29, 60), false);
    assert.equal(stopDue(31, 30, 60), true);
    assert.equal(stopDue(60, 59, 60), false, 'the barrier is the end: the run completes');
  });

  test('the lifeline: the worker exits when standard input closes', () => {
    const input = new PassThrough();
    const codes: number[] = [];
    holdLifeline(
      input,
      () => {},
      (code) => codes.push(code),
    );
    input.write('ignored');
    assert.deepEqual(codes, []);
    input.destroy();
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        assert.deepEqual(codes, [EXIT_LAUNCHER_GONE]);
        resolve();
      }),
    );
  });
});

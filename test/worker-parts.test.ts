/**
 * The worker's parts, without sockets: the control rules (rollback, shutdown, a new welcome,
 * stale messages, advance), the link's join and its verdict on a silent coordinator given
 * message arrival times, the teacher window, restore and reinitialise (state), when progress,
 * checkpoints and evaluations are due (hooks), and a member step and a teacher step on a
 * small model with a fake link.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import type { WorkerConfig } from '../shared/config/run-config.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { initBackend } from '../shared/engine/backend.js';
import { CohortError } from '../shared/errors.js';
import { MetricAccumulator } from '../shared/metrics/index.js';
import { buildModel } from '../shared/models/index.js';
import type { Message, MessageOf } from '../shared/protocol/messages.js';
import { ReceiveTimeout } from '../shared/protocol/sockets.js';
import { makeOptimizer, objectiveFor } from '../shared/training/objective.js';
import { checkpointDue, evaluationDue, progressDue, ProgressReporter } from '../worker/hooks.js';
import { admission, CoordinatorLost, judgeControl, Link, Rollback, type ControlState, type LinkSocket } from '../worker/link.js';
import { CoordinatorLiveness } from '../worker/liveness.js';
import { WorkerState, type Initial } from '../worker/state.js';
import { memberStep, teacherStep, type StepContext } from '../worker/steps.js';
import { TeacherWindow } from '../worker/teacher-window.js';

const welcome = (extra: Partial<MessageOf<'welcome'>> = {}): MessageOf<'welcome'> => ({
  type: 'welcome',
  runId: 'r',
  member: 'a',
  members: ['a', 'b'],
  startStep: 0,
  config: {},
  generation: 0,
  ...extra,
});
const state = (generation = 1): ControlState => ({ member: 'a', generation, admitted: admission(welcome({ generation })) });

describe('control rules', () => {
  test('a rollback of a newer generation rolls back; of this or an older one it is ignored', () => {
    const rollback: MessageOf<'rollback'> = { type: 'rollback', step: 10, generation: 2, reason: 'b lost' };
    assert.deepEqual(judgeControl(state(1), rollback), { kind: 'rollback', rollback });
    assert.deepEqual(judgeControl(state(2), rollback), { kind: 'ignore' });
  });

  test('a shutdown or an error from the coordinator stops the worker, with a code', () => {
    const stop = judgeControl(state(), { type: 'shutdown', reason: 'the run is complete' });
    assert.ok(stop.kind === 'stop' && stop.error.code === 'COORDINATOR_STOPPED' && stop.error.message === 'a: the coordinator stopped the run: the run is complete');
    const failed = judgeControl(state(), { type: 'error', message: 'boom' });
    assert.ok(failed.kind === 'stop' && failed.error.code === 'COORDINATOR_FAILED');
  });

  test('a welcome saying something new re-admits the worker (a rollback to its start); the same welcome again, or an older one, is ignored', () => {
    assert.deepEqual(judgeControl(state(1), welcome({ generation: 1 })), { kind: 'ignore' });
    assert.deepEqual(judgeControl(state(1), welcome({ generation: 0, startStep: 5 })), { kind: 'ignore' });
    const again = welcome({ generation: 1, startStep: 30, resume: '/ck/step-20', checkpointStep: 20 });
    assert.deepEqual(judgeControl(state(1), again), {
      kind: 'rollback',
      rollback: { type: 'rollback', step: 30, checkpoint: '/ck/step-20', generation: 1, reason: 'the coordinator admitted this worker again' },
      checkpointStep: 20,
      admitted: admission(again),
    });
  });

  test('heartbeats, retryable refusals and stale teaching are ignored; advance moves the window; anything else is not control', () => {
    assert.deepEqual(judgeControl(state(), { type: 'heartbeat' }), { kind: 'ignore' });
    assert.deepEqual(judgeControl(state(), { type: 'reject', reason: 'x', retryable: true }), { kind: 'ignore' });
    assert.deepEqual(judgeControl(state(), { type: 'reject', reason: 'x' }), { kind: 'not-control' });
    const teaching = (generation: number): Message => ({
      type: 'teaching',
      step: 0,
      teaching: { dtype: 'float32', shape: [1, 2], data: new Float32Array(2) },
      peerCount: 1,
      generation,
    });
    assert.deepEqual(judgeControl(state(1), teaching(0)), { kind: 'ignore' });
    assert.deepEqual(judgeControl(state(1), teaching(1)), { kind: 'not-control' });
    assert.deepEqual(judgeControl(state(), { type: 'advance', step: 7 }), { kind: 'advance', step: 7 });
  });
});

describe('teacher window and coordinator liveness', () => {
  test('a teacher computes at most `window` steps ahead of the last step every student finished; advances never move back', () => {
    const w = new TeacherWindow(2);
    w.reset(10);
    assert.ok(w.allows(11) && !w.allows(12));
    w.advance(12);
    assert.ok(w.allows(14) && !w.allows(15));
    w.advance(3);
    assert.equal(w.studentsDone, 12);
  });

  test('the coordinator is lost once nothing arrived from it for longer than livenessMs', () => {
    const l = new CoordinatorLiveness(1000, 0);
    assert.equal(l.waitMs(400), 600);
    assert.equal(l.waitMs(5000), 1, 'a receive waits at least 1 ms');
    assert.equal(l.lost(1000), false);
    assert.equal(l.lost(1001), true);
    l.arrived(1001);
    assert.equal(l.lost(2000), false);
  });

  test('what the heartbeat thread heard counts: a main thread busy computing does not find the coordinator silent', () => {
    let heard = 0;
    const l = new CoordinatorLiveness(1000, 0, () => heard);
    heard = 1500; // the thread received a heartbeat at 1500 while the main thread computed
    assert.equal(l.lost(2000), false);
    assert.equal(l.waitMs(2000), 500);
    assert.equal(l.lost(2501), true);
    l.arrived(100); // an older arrival on the main socket does not move the time back
    assert.equal(l.silentMs(2500), 1000);
  });

  test('a coordinator whose process answers pings (its main thread busy) is alive for up to hangMs after its last message', () => {
    let alive = 0;
    const l = new CoordinatorLiveness(1000, 0, () => 0, { alive: () => alive, hangMs: 5000 });
    alive = 2500; // its connection showed it alive at 2500; no message since 0
    assert.equal(l.lost(3000), false, 'busy, not silent');
    assert.equal(l.lost(3501), true, 'the pings stopped (a stopped process or a cut network): lost livenessMs after the last sign');
    alive = 10_000;
    assert.equal(l.lost(4900), false);
    assert.equal(l.lost(5001), true, 'silent for hangMs while its process answers: hung, lost');
    l.arrived(5500);
    assert.equal(l.lost(6000), false, 'a message starts the count again');
    assert.equal(l.lost(10_400), false);
    assert.equal(l.lost(10_501), true, 'hangMs after the new message');
  });
});

/** A socket that answers from a script, on a made-up clock. */
class FakeSocket implements LinkSocket {
  readonly member = 'a';
  readonly sent: Message[] = [];
  readonly waits: (number | undefined)[] = [];
  constructor(
    private readonly inbox: (Message | 'timeout')[],
    private readonly clock: { now: number },
    readonly polled: Message[] = [],
  ) {}
  async send(message: Message) {
    this.sent.push(message);
  }
  async receive(timeoutMs?: number): Promise<Message> {
    this.waits.push(timeoutMs);
    const next = this.inbox.shift();
    if (next === undefined || next === 'timeout') {
      this.clock.now += timeoutMs ?? 0;
      throw new ReceiveTimeout('timeout');
    }
    return next;
  }
  async poll(): Promise<Message | undefined> {
    return this.polled.shift();
  }
}

describe('link', () => {
  test('joins until welcomed; a refusal that is not retryable, or no welcome in time, is an error with its code', async () => {
    const clock = { now: 0 };
    const ok = new FakeSocket(['timeout', welcome()], clock);
    const link = new Link(ok, () => clock.now);
    assert.equal((await link.join({ member: 'a', connect: 'tcp://x' }, 60_000)).type, 'welcome');
    assert.deepEqual(
      ok.sent.map((m) => m.type),
      ['join', 'join'],
      'asked again after 2 s without an answer',
    );
    await assert.rejects(
      new Link(new FakeSocket([{ type: 'reject', reason: "'a' is a teacher" }], clock), () => clock.now).join({ member: 'a', connect: 'tcp://x' }, 60_000),
      (e: unknown) => e instanceof CohortError && e.code === 'JOIN_REFUSED',
    );
    await assert.rejects(
      new Link(new FakeSocket([], clock), () => clock.now).join({ member: 'a', connect: 'tcp://x' }, 5000),
      (e: unknown) => e instanceof CohortError && e.code === 'NO_WELCOME' && /within 5 s/.test(e.message),
    );
  });

  test('the coordinator is judged lost by when its last message arrived: a receive waits only what is left, and a poll between steps decides', async () => {
    const clock = { now: 0 };
    const socket = new FakeSocket([{ type: 'heartbeat' }, 'timeout'], clock);
    const link = new Link(socket, () => clock.now);
    link.start({ livenessMs: 3000, heartbeatMs: 60_000 }, 0);
    link.stop();
    clock.now = 1000;
    await link.receive();
    assert.equal(socket.waits[0], 2000);
    clock.now = 2500;
    await assert.rejects(link.receive(), CoordinatorLost);
    assert.equal(socket.waits[1], 1500);
    const polling = new Link(new FakeSocket([], clock, [{ type: 'heartbeat' }]), () => clock.now);
    polling.start({ livenessMs: 3000, heartbeatMs: 60_000 }, 0);
    polling.stop();
    clock.now += 3001;
    await polling.poll(); // the heartbeat arrived just now
    clock.now += 3001;
    await assert.rejects(polling.poll(), (e: unknown) => e instanceof CoordinatorLost && /for 3 s/.test(e.message));
  });

  test('a receive that times out waits again when the heartbeat thread heard the coordinator meanwhile', async () => {
    const clock = { now: 0 };
    const socket = new FakeSocket(['timeout', 'timeout', 'timeout'], clock);
    const link = new Link(socket, () => clock.now);
    // The thread heard a heartbeat at 2000, while the main thread waited on its own socket.
    link.start({ livenessMs: 3000, heartbeatMs: 60_000 }, 0, () => (clock.now >= 3000 ? 2000 : 0));
    link.stop();
    await assert.rejects(link.receive(), (e: unknown) => e instanceof CoordinatorLost && /for 3 s/.test(e.message));
    assert.deepEqual(socket.waits, [3000, 2000, 1], 'after the first timeout (at 3000) it waits until 2000 + 3000, then lost just past it');
  });

  test('a receive that times out reads what is already waiting before it judges the coordinator lost (a starved process)', async () => {
    const clock = { now: 0 };
    // The wait timed out (the clock is past livenessMs), but the coordinator's message is queued.
    const socket = new FakeSocket(['timeout'], clock, [{ type: 'heartbeat' }]);
    const link = new Link(socket, () => clock.now);
    link.start({ livenessMs: 3000, heartbeatMs: 60_000 }, 0);
    link.stop();
    clock.now = 1000;
    assert.equal((await link.receive()).type, 'heartbeat');
    assert.equal(clock.now, 3000, 'the wait timed out first');
    // Nothing waiting: the same timeout is a loss.
    await assert.rejects(link.receive(), CoordinatorLost);
  });

  test('control: an advance moves the teacher window, a rollback is thrown, a new welcome is followed', () => {
    const clock = { now: 0 };
    const link = new Link(new FakeSocket([], clock), () => clock.now);
    link.start({ livenessMs: 3000, heartbeatMs: 60_000 }, 1);
    link.stop();
    link.follow(welcome({ generation: 1 }));
    link.window.reset(0);
    assert.equal(link.control({ type: 'advance', step: 4 }), true);
    assert.equal(link.window.studentsDone, 4);
    assert.throws(
      () => link.control({ type: 'rollback', step: 2, generation: 2, reason: 'x' }),
      (e: unknown) => e instanceof Rollback && e.rollback.step === 2,
    );
    const again = welcome({ generation: 1, startStep: 9 });
    assert.throws(
      () => link.control(again),
      (e: unknown) => e instanceof Rollback && e.rollback.step === 9,
    );
    assert.equal(link.control(again), true, 'the same welcome again is a duplicate');
    assert.equal(link.control({ type: 'predictions' } as Message), false);
  });
});

/** Stand-ins for a model and optimizer that count their disposals. */
function fakeInitial(counter: { built: number; disposed: number }) {
  return (): Initial => {
    counter.built++;
    const dispose = () => void counter.disposed++;
    return { built: { model: { dispose }, exits: 1 } as unknown as Initial['built'], optimizer: { dispose } as unknown as Initial['optimizer'] };
  };
}

describe('state', () => {
  test('a member restores the checkpoint named, checking its step; an elastic rejoin continues at another step', async () => {
    const counter = { built: 0, disposed: 0 };
    const loaded: string[] = [];
    const s = new WorkerState({ name: 'a', fixed: false, initial: fakeInitial(counter), load: async (dir) => (loaded.push(dir), { step: 20, lastLoss: 0.5 }) });
    assert.equal(await s.restore(20, '/run/checkpoints/step-20'), 20);
    assert.deepEqual(loaded, ['/run/checkpoints/step-20/a']);
    assert.equal(s.lastLoss, 0.5);
    assert.equal(await s.restore(35, '/run/checkpoints/step-20', 20), 35);
    await assert.rejects(
      s.restore(30, '/run/checkpoints/step-20'),
      (e: unknown) => e instanceof CohortError && e.code === 'CHECKPOINT_MISMATCH' && /holds step 20, expected 30/.test(e.message),
    );
  });

  test('without a checkpoint a member starts again from its initial state (step 0 only); a teacher restores nothing', async () => {
    const counter = { built: 0, disposed: 0 };
    const s = new WorkerState({ name: 'a', fixed: false, initial: fakeInitial(counter), load: async () => ({ step: 10, lastLoss: 1 }) });
    await s.restore(10, '/ck');
    assert.equal(await s.restore(0, undefined), 0);
    assert.deepEqual(counter, { built: 2, disposed: 2 });
    assert.equal(s.lastLoss, undefined);
    await assert.rejects(s.restore(10, undefined, 10), (e: unknown) => e instanceof CohortError && e.code === 'CHECKPOINT_MISMATCH');
    const teacher = new WorkerState({ name: 't', fixed: true, initial: fakeInitial(counter), load: async () => assert.fail('a teacher loads no checkpoint') });
    assert.equal(await teacher.restore(40, '/ck'), 40);
  });
});

describe('hooks', () => {
  test('progress every progressEvery steps and at the end of each epoch; checkpoints every everySteps but not after the last step; evaluations every evalEvery epochs and after the last', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((s) => progressDue(s, 2, false)),
      [false, true, false, true, false],
    );
    assert.equal(progressDue(4, 2, true), true);
    assert.deepEqual(
      [4, 9, 14, 19].map((s) => checkpointDue(s, 5, 20)),
      [true, true, true, false],
    );
    assert.deepEqual(
      [0, 1, 2, 3, 4].map((e) => evaluationDue(e, 2, 5)),
      [false, true, false, true, true],
    );
  });

  test('a progress report covers the steps since the last one: throughput and mean step time; a teacher reports no loss', () => {
    let now = 0;
    const member = new ProgressReporter({ progressEvery: 2, totalSteps: 10, member: true }, () => now);
    now = 100;
    assert.equal(member.step(0, 0, 32, false, { loss: 1, generation: 0 }), undefined);
    now = 400;
    const report = member.step(0, 1, 32, false, { loss: 0.9, lr: 0.1, generation: 3 });
    assert.deepEqual(report, { type: 'progress', epoch: 0, step: 1, totalSteps: 10, loss: 0.9, imagesPerSecond: 160, stepMs: 200, lr: 0.1, generation: 3 });
    const teacher = new ProgressReporter({ progressEvery: 1, totalSteps: 10, member: false }, () => now);
    assert.equal(teacher.step(0, 0, 32, false, { loss: 0.9, generation: 0 })?.loss, undefined);
  });
});

describe('steps', () => {
  before(async () => {
    await initBackend({ backend: 'cpu' });
  });

  const config = resolveRunConfig({
    name: 'parts',
    algorithm: 'baseline',
    dataset: { name: 'fashion-mnist' },
    members: [{ name: 'a', model: { name: 'mlp-student' } }],
    temperature: 2,
  });
  const worker = config.members[0] as WorkerConfig;
  const batch = {
    images: new Float32Array(4 * 28 * 28).fill(0.5),
    shape: [4, 28, 28, 1] as [number, number, number, number],
    labels: Int32Array.from([0, 1, 2, 3]),
    indices: Uint32Array.from([7, 8, 9, 10]),
    epoch: 0,
    batch: 0,
  };
  const context = (inbox: (Message | 'timeout')[]) => {
    const clock = { now: 0 };
    const socket = new FakeSocket(inbox, clock);
    const link = new Link(socket, () => clock.now);
    link.start({ livenessMs: 60_000, heartbeatMs: 60_000 }, 1);
    link.stop();
    const s = new WorkerState({
      name: 'a',
      fixed: false,
      initial: () => ({ built: buildModel({ inputShape: [28, 28, 1], classes: 10, name: 'mlp-student', seed: 1 }), optimizer: makeOptimizer(worker.optimizer) }),
    });
    const ctx: StepContext = { link, state: s, worker, objective: objectiveFor(config), temperature: 2, stepsPerEpoch: 10, totalSteps: 10, exchange: { float16: false } };
    return { ctx, socket };
  };

  test('a member step sends its tempered predictions of the batch, then trains: the loss is kept for the next step', async () => {
    const { ctx, socket } = context([]);
    const outcome = await memberStep(ctx, 0, batch, new MetricAccumulator({ bins: 15 }));
    const first = ctx.state.lastLoss;
    const before = tf.memory().numTensors; // after the optimizer's slots were made
    await memberStep(ctx, 1, batch, new MetricAccumulator({ bins: 15 }));
    assert.notEqual(ctx.state.lastLoss, first, 'the update changed the model');
    assert.equal((socket.sent[1] as MessageOf<'predictions'>).loss, first, "the previous step's loss goes with the next predictions");
    const sent = socket.sent[0] as MessageOf<'predictions'>;
    assert.equal(sent.type, 'predictions');
    assert.deepEqual(Array.from(sent.indices.data), [7, 8, 9, 10]);
    const rows = sent.probs.data as Float32Array;
    for (let r = 0; r < 4; r++) assert.ok(Math.abs(rows.slice(r * 10, r * 10 + 10).reduce((a, b) => a + b, 0) - 1) < 1e-5);
    assert.ok(Number.isFinite(ctx.state.lastLoss));
    assert.equal(typeof outcome.lr, 'number');
    assert.equal(tf.memory().numTensors, before, 'no tensor left behind');
    ctx.state.dispose();
  });

  test('a teacher step waits for the students to come within its window, taking advances as they arrive', async () => {
    const { ctx, socket } = context([{ type: 'heartbeat' }, { type: 'advance', step: 3 }]);
    ctx.link.window.reset(0);
    await teacherStep(ctx, 4, batch, new MetricAccumulator({ bins: 15 }));
    assert.equal(ctx.link.window.studentsDone, 3);
    assert.deepEqual(
      socket.sent.map((m) => m.type),
      ['predictions'],
    );
    assert.equal((socket.sent[0] as MessageOf<'predictions'>).step, 4);
    const { ctx: stray } = context([{ type: 'eval', epoch: 0, generation: 0, metrics: { accuracy: 1, nll: 0, ece: 0 } }]);
    stray.link.window.reset(0);
    await assert.rejects(teacherStep(stray, 4, batch, new MetricAccumulator({ bins: 15 })), (e: unknown) => e instanceof CohortError && e.code === 'PROTOCOL_MISMATCH');
    ctx.state.dispose();
    stray.state.dispose();
  });
});

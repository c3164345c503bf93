/**
 * The coordinator's parts, without sockets: admission and refusal (membership), when a step is
 * served and with what (step server), the ensemble's evaluation records (evaluations), when a
 * checkpoint is complete and which one a rollback uses (checkpoints), the policy's decisions
 * and the restart count (recovery), liveness verdicts given message arrival times (liveness),
 * and the event records of metrics.jsonl (run records).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoints, type CheckpointStore } from '../coordinator/checkpoints.js';
import { Evaluations } from '../coordinator/evaluations.js';
import { Liveness } from '../coordinator/liveness.js';
import { Membership } from '../coordinator/membership.js';
import { judgeElasticSilence, judgeRejoin, judgeSilence, Recovery } from '../coordinator/recovery.js';
import { RunRecords } from '../coordinator/run-records.js';
import { StepServer } from '../coordinator/step-server.js';
import type { TeachingRule } from '../shared/algorithms/registry.js';
import { CohortError } from '../shared/errors.js';
import { parseMetricsLines, type EventRecord } from '../shared/metrics/records.js';
import { PROTOCOL_VERSION, type Message, type MessageOf } from '../shared/protocol/messages.js';
import { predictionsMessage } from './helpers/messages.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-parts-'));
after(() => rmSync(root, { recursive: true, force: true }));

const joinOf = (member: string, extra: Partial<MessageOf<'join'>> = {}): MessageOf<'join'> => ({
  type: 'join',
  protocolVersion: PROTOCOL_VERSION,
  member,
  backend: 'cpu',
  device: '',
  pid: 100,
  host: 'h',
  ...extra,
});
const peer = (name: string) => Buffer.from(`${name}#peer`);

describe('membership', () => {
  const fresh = () => new Membership('run', ['a', 'b'], ['t']);

  test('refuses another protocol version, another run, an unknown name and the wrong role, with the reason', () => {
    const m = fresh();
    const refused = (j: MessageOf<'join'>) => {
      const v = m.judgeJoin(j);
      assert.equal(v.action, 'reject');
      return v.action === 'reject' ? v : undefined!;
    };
    assert.match(
      refused(joinOf('a', { protocolVersion: PROTOCOL_VERSION + 1 })).reason,
      new RegExp(`^protocol version ${PROTOCOL_VERSION + 1}; this coordinator speaks version ${PROTOCOL_VERSION}$`),
    );
    assert.match(refused(joinOf('a', { runId: 'other' })).reason, /runs 'run', not 'other'/);
    assert.match(refused(joinOf('z')).reason, /no member or teacher named 'z' in run 'run' \(expected a, b, t\)/);
    const wrongRole = refused(joinOf('t', { role: 'member' }));
    assert.match(wrongRole.reason, /'t' is a teacher in this run, not a member/);
    assert.equal(wrongRole.retryable, false);
    assert.deepEqual(m.judgeJoin(joinOf('a', { role: 'student' })), { action: 'admit', role: 'member' });
    assert.deepEqual(m.judgeJoin(joinOf('t', { role: 'teacher' })), { action: 'admit', role: 'teacher' });
  });

  test('a second process under a joined name is refused as retryable; the same process is answered again, or lost once it was training', () => {
    const m = fresh();
    assert.equal(m.admit(peer('a'), joinOf('a')), false);
    const other = m.judgeJoin(joinOf('a', { pid: 200 }));
    assert.deepEqual(other, { action: 'reject', reason: "'a' has already joined (from h:100)", retryable: true });
    assert.deepEqual(m.judgeJoin(joinOf('a')), { action: 'welcome-again' });
    m.heardFrom('a');
    assert.deepEqual(m.judgeJoin(joinOf('a')), { action: 'lost-and-rejoin' });
    m.remove('a');
    assert.deepEqual(m.judgeJoin(joinOf('a', { pid: 200 })), { action: 'admit', role: 'member' });
  });

  test("a heartbeat thread's beat maps to the worker joined with its member name and pid; generations followed are forgotten by a rollback", () => {
    const m = fresh();
    m.admit(peer('a'), joinOf('a'));
    assert.equal(m.heartbeatOf({ member: 'a', pid: 100 }), 'a');
    assert.equal(m.heartbeatOf({ member: 'a', pid: 101 }), undefined, 'another process of the same name');
    assert.equal(m.heartbeatOf({ member: 'b', pid: 100 }), undefined, 'not joined');
    assert.equal(m.heartbeatOf({}), undefined, 'a heartbeat that names nobody');
    assert.equal(m.isCaughtUp('a'), false);
    m.followsGeneration('a');
    assert.equal(m.isCaughtUp('a'), true);
    m.newGeneration();
    assert.equal(m.isCaughtUp('a'), false);
    assert.equal(m.admittedSince('a'), false, 'admitted before the rollback');
    m.admit(peer('b'), joinOf('b'));
    assert.equal(m.admittedSince('b'), true);
    m.followsGeneration('a');
    m.remove('a');
    assert.equal(m.isCaughtUp('a'), false, 'a removed worker follows nothing');
  });

  test('knows which worker a peer joined as and its pid; forgets both when it is removed', () => {
    const m = fresh();
    m.admit(peer('b'), joinOf('b', { pid: 4242 }));
    assert.equal(m.nameOf(peer('b')), 'b');
    assert.equal(m.pidOf('b'), 4242);
    assert.deepEqual(m.joined(), ['b']);
    m.remove('b');
    assert.equal(m.nameOf(peer('b')), undefined);
    assert.equal(m.pidOf('b'), 0);
    assert.equal(m.isJoined('b'), false);
  });

  test('elastic: an absent worker leaves the live set, its return is an elastic rejoin, and it is given up on only once the others are done and it is late', () => {
    const m = fresh();
    for (const n of ['a', 'b', 't']) m.admit(peer(n), joinOf(n));
    m.remove('b');
    m.markAbsent('b', 1000);
    assert.deepEqual(m.live(['a', 'b']), ['a']);
    assert.equal(m.running(), true);
    m.finished('a');
    assert.deepEqual(m.givenUp(1000 + 5000, 3000), [], 't is not done yet');
    m.finished('t');
    assert.deepEqual(m.givenUp(1000 + 2000, 3000), [], 'not late yet');
    assert.deepEqual(m.givenUp(1000 + 3001, 3000), ['b']);
    assert.equal(m.admit(peer('b'), joinOf('b', { pid: 7 })), true, 'an absent worker returning');
    assert.deepEqual(m.live(['a', 'b']), ['a', 'b']);
  });

  test('the run goes on until every worker is done', () => {
    const m = fresh();
    m.finished('a');
    m.finished('b');
    assert.equal(m.running(), true);
    m.finished('t');
    assert.equal(m.running(), false);
  });
});

describe('liveness', () => {
  const options = { livenessMs: 1000, heartbeatMs: 200, timeoutMs: 5000 };

  test('a worker is lost when nothing arrived from it for longer than livenessMs, judged by arrival times', () => {
    const l = new Liveness(options, 0);
    l.watch('a', 0);
    l.watch('b', 0);
    l.arrived(900, 'a');
    assert.deepEqual(l.silent(1000), []);
    assert.deepEqual(l.silent(1001), [{ worker: 'b', silentMs: 1001 }]);
    assert.deepEqual(l.silent(1901), [
      { worker: 'a', silentMs: 1001 },
      { worker: 'b', silentMs: 1901 },
    ]);
    assert.deepEqual(l.silent(1901, new Set(['b'])), [{ worker: 'a', silentMs: 1001 }], 'a finished worker is excused');
    l.forget('a');
    assert.deepEqual(l.silent(5000, new Set(['b'])), []);
  });

  test("a stall of the coordinator's own loop is nobody's silence: the gap is excused, and for livenessMs an unreachable worker is not lost", () => {
    const l = new Liveness(options, 0);
    l.watch('a', 0);
    l.watch('b', 0);
    assert.equal(l.stallMs, 2000, 'at least 2 s, or twice heartbeatMs');
    assert.equal(l.looked(500), 0);
    l.arrived(600, 'a');
    assert.equal(l.looked(2400), 0, 'a gap of 1.9 s is not a stall');
    assert.deepEqual(
      l.silent(2400).map((s) => s.worker),
      ['a', 'b'],
      'judged by arrivals: nothing arrived since 600 and 0',
    );
    const gap = l.looked(12_400); // the process was stopped for 10 s
    assert.equal(gap, 10_000);
    assert.deepEqual(
      l.silent(12_400),
      [
        { worker: 'a', silentMs: 1800 },
        { worker: 'b', silentMs: 2400 },
      ],
      'the silence before the stall counts, the stall does not',
    );
    assert.equal(l.recovering(12_400 + 999), true);
    assert.equal(l.recovering(12_400 + 1000), false);
    l.arrived(12_500, 'a');
    assert.deepEqual(
      l.silent(13_400).map((s) => s.worker),
      ['b'],
    );
  });

  test('heartbeats are due every heartbeatMs; the run stalls when nothing at all arrived for timeoutMs', () => {
    const l = new Liveness(options, 0);
    assert.equal(l.heartbeatDue(199), false);
    assert.equal(l.heartbeatDue(200), true);
    assert.equal(l.heartbeatDue(300), false);
    assert.equal(l.heartbeatDue(400), true);
    assert.equal(l.stalled(5000), false);
    assert.equal(l.stalled(5001), true);
    l.arrived(5001); // a message from a peer not joined counts too
    assert.equal(l.stalled(6000), false);
  });
});

function predictions(step: number, probs: number[][], indices = [0, 1], extra: Partial<MessageOf<'predictions'>> = {}): MessageOf<'predictions'> {
  return predictionsMessage(step, indices, probs.flat(), -0.5, { generation: 0, ...extra });
}

function server(rule: TeachingRule, members = ['a', 'b', 'c'], teachers: string[] = [], absent = new Set<string>()) {
  const sent: { name: string; message: Message }[] = [];
  const s = new StepServer({ members, teachers, rule, isLive: (n) => !absent.has(n) });
  const send = async (name: string, message: Message) => void sent.push({ name, message });
  return { s, sent, send, absent };
}

const teachingOf = (m: Message) => (m.type === 'teaching' ? Array.from(m.teaching.data as Float32Array) : assert.fail(`${m.type} is not teaching`));

describe('step server', () => {
  const dml: TeachingRule = { kind: 'peers-leave-one-out', negEntropy: true };

  test("DML: a step is served once every live member has sent, each member getting its peers' mean", async () => {
    const { s, sent, send } = server(dml);
    s.add(
      'a',
      'member',
      predictions(0, [
        [1, 0],
        [0, 1],
      ]),
    );
    s.add(
      'c',
      'member',
      predictions(0, [
        [0, 1],
        [0, 1],
      ]),
    );
    assert.equal(await s.serve(0, 0, send), false);
    assert.equal(sent.length, 0);
    s.add(
      'b',
      'member',
      predictions(
        0,
        [
          [0.5, 0.5],
          [1, 0],
        ],
        [0, 1],
        { loss: 0.7 },
      ),
    );
    assert.equal(await s.serve(0, 3, send), true);
    assert.deepEqual(
      sent.map((x) => x.name),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(teachingOf(sent[0].message), [0.25, 0.75, 0.5, 0.5]);
    assert.deepEqual(teachingOf(sent[1].message), [0.5, 0.5, 0, 1]);
    const first = sent[0].message as MessageOf<'teaching'>;
    assert.equal(first.peerCount, 2);
    assert.equal(first.generation, 3);
    assert.equal(first.peerNegEntropy, -0.5);
    assert.equal(s.nextStep, 1);
    assert.equal(s.served, 1);
    assert.equal(s.lastLoss.get('b'), 0.7);
    assert.deepEqual(
      s.add(
        'a',
        'member',
        predictions(0, [
          [1, 0],
          [0, 1],
        ]),
      ),
      { kind: 'already-done' },
    );
  });

  test('predictions of other samples stop the run; a duplicate or another shape is ignored', () => {
    const { s } = server(dml);
    s.add(
      'a',
      'member',
      predictions(0, [
        [1, 0],
        [0, 1],
      ]),
    );
    assert.deepEqual(
      s.add(
        'a',
        'member',
        predictions(0, [
          [1, 0],
          [0, 1],
        ]),
      ),
      { kind: 'duplicate' },
    );
    assert.equal(
      s.add(
        'b',
        'member',
        predictions(0, [
          [1, 0, 0],
          [0, 1, 0],
        ]),
      ).kind,
      'other-shape',
    );
    assert.throws(
      () =>
        s.add(
          'c',
          'member',
          predictions(
            0,
            [
              [1, 0],
              [0, 1],
            ],
            [5, 6],
          ),
        ),
      (e: unknown) => e instanceof CohortError && e.code === 'SAMPLES_MISMATCH' && /c's batch holds samples \[5, 6\] but a's \[0, 1\]/.test(e.message),
    );
  });

  test('the next step not done advances only over steps every member has been served', async () => {
    const { s, send } = server(dml, ['a', 'b']);
    for (const n of ['a', 'b'])
      s.add(
        n,
        'member',
        predictions(1, [
          [1, 0],
          [0, 1],
        ]),
      );
    assert.equal(await s.serve(1, 0, send), true);
    assert.equal(s.nextStep, 0, 'step 0 is not done');
    for (const n of ['a', 'b'])
      s.add(
        n,
        'member',
        predictions(0, [
          [1, 0],
          [0, 1],
        ]),
      );
    await s.serve(0, 0, send);
    assert.equal(s.nextStep, 2);
    s.rollBack(0);
    assert.equal(s.nextStep, 0);
    assert.equal(s.isServed(1), false);
  });

  test('elastic: a lost member leaves the steps in flight, which the live ones are served without it', async () => {
    const { s, sent, send, absent } = server(dml);
    s.add(
      'a',
      'member',
      predictions(0, [
        [1, 0],
        [0, 1],
      ]),
    );
    s.add(
      'b',
      'member',
      predictions(0, [
        [0, 1],
        [1, 0],
      ]),
    );
    s.add(
      'c',
      'member',
      predictions(1, [
        [0, 1],
        [1, 0],
      ]),
    );
    absent.add('c');
    s.drop('c', 'member');
    assert.deepEqual(s.pending(), [0, 1]);
    assert.equal(await s.serve(0, 0, send), true);
    assert.deepEqual(
      sent.map((x) => x.name),
      ['a', 'b'],
    );
    assert.deepEqual(teachingOf(sent[0].message), [0, 1, 1, 0], "a's only live peer is b");
  });

  test("KD: members wait for every live teacher; each gets the teachers' mean", async () => {
    const { s, sent, send } = server({ kind: 'teachers-mean' }, ['a'], ['t1', 't2']);
    s.add(
      't1',
      'teacher',
      predictions(0, [
        [1, 0],
        [0, 1],
      ]),
    );
    s.add(
      'a',
      'member',
      predictions(0, [
        [0.5, 0.5],
        [0.5, 0.5],
      ]),
    );
    assert.equal(await s.serve(0, 0, send), false, 't2 has not sent');
    s.add(
      't2',
      'teacher',
      predictions(0, [
        [0, 1],
        [0, 1],
      ]),
    );
    assert.equal(await s.serve(0, 0, send), true);
    assert.deepEqual(
      sent.map((x) => x.name),
      ['a'],
    );
    assert.deepEqual(teachingOf(sent[0].message), [0.5, 0.5, 0, 1]);
    assert.equal((sent[0].message as MessageOf<'teaching'>).peerCount, 2);
  });

  test('an algorithm without teaching: a step is done once every member has sent, with nothing sent', async () => {
    const { s, sent, send } = server({ kind: 'none' }, ['a', 'b']);
    s.add('a', 'member', predictions(0, [[1, 0]], [0]));
    assert.equal(await s.serve(0, 0, send), false);
    s.add('b', 'member', predictions(0, [[1, 0]], [0]));
    assert.equal(await s.serve(0, 0, send), true);
    assert.equal(sent.length, 0);
  });
});

describe('evaluations', () => {
  const logits = (epoch: number, batch: number, data: number[]): MessageOf<'evalLogits'> => ({
    type: 'evalLogits',
    epoch,
    batch,
    generation: 0,
    indices: { dtype: 'uint32', shape: [2], data: Uint32Array.from([0, 1]) },
    labels: { dtype: 'int32', shape: [2], data: Int32Array.from([0, 1]) },
    logits: { dtype: 'float32', shape: [2, 2], data: Float32Array.from(data) },
  });
  const evalOf = (epoch: number, accuracy: number): MessageOf<'eval'> => ({ type: 'eval', epoch, generation: 0, metrics: { accuracy, nll: 0.5, ece: 0.1 } });

  test("the ensemble's record follows the last member's, once every member has sent its logits and metrics; teachers do not count", () => {
    const e = new Evaluations(['a', 'b']);
    e.addLogits('a', 'member', logits(0, 0, [5, 0, 0, 5]));
    e.addLogits('t', 'teacher', logits(0, 0, [0, 5, 5, 0]));
    assert.deepEqual(
      e.addEval('a', 'member', evalOf(0, 0.9)).map((x) => x.record.worker),
      ['a'],
    );
    assert.deepEqual(
      e.addEval('t', 'teacher', evalOf(0, 0.8)).map((x) => x.record.worker),
      ['t'],
    );
    e.addLogits('b', 'member', logits(0, 0, [3, 0, 0, 3]));
    const last = e.addEval('b', 'member', evalOf(0, 0.7));
    assert.deepEqual(
      last.map((x) => x.record.worker),
      ['b', 'ensemble'],
    );
    assert.equal(last[1].record.accuracy, 1);
    assert.equal(last[1].record.role, 'ensemble');
    assert.ok(last[1].reliability && last[1].reliability.length > 0);
    assert.deepEqual(
      e.finalRecords(['a', 'b', 't', 'ensemble']).map((r) => r.worker),
      ['a', 'b', 't', 'ensemble'],
    );
  });

  test('a rollback forgets evaluations in progress', () => {
    const e = new Evaluations(['a', 'b']);
    e.addLogits('a', 'member', logits(0, 0, [5, 0, 0, 5]));
    e.addLogits('b', 'member', logits(0, 0, [5, 0, 0, 5]));
    e.addEval('a', 'member', evalOf(0, 0.9));
    e.rollBack();
    assert.deepEqual(
      e.addEval('b', 'member', evalOf(0, 0.9)).map((x) => x.record.worker),
      ['b'],
    );
  });
});

function memoryStore(failAt?: number) {
  const written: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const store: CheckpointStore = {
    writeManifest: async (step) => {
      await gate;
      if (step === failAt) throw new Error('no space left on device (ENOSPC)');
      written.push(step);
    },
    prune: async () => {},
    latest: () => written.at(-1),
    dirOf: (step) => `/run/checkpoints/step-${step}`,
  };
  return { store, written, release };
}

describe('checkpoints', () => {
  test('a checkpoint is complete once every member has reported it; a rollback uses the newest complete one, after the writes in progress', async () => {
    const { store, written, release } = memoryStore();
    const completed: number[] = [];
    const c = new Checkpoints(['a', 'b'], store, { onComplete: (step) => completed.push(step) });
    assert.deepEqual(await c.rollbackPoint(), { step: 0 }, 'none yet: the initial weights');
    assert.equal(c.reported('a', 10), false);
    assert.equal(c.reported('a', 10), false, 'the same member twice');
    assert.equal(c.reported('b', 10), true);
    c.reported('a', 20);
    assert.equal(c.reported('b', 20), true);
    c.reported('a', 30); // b never reports step 30
    const point = c.rollbackPoint();
    assert.deepEqual(written, [], 'not on disk yet');
    release();
    assert.deepEqual(await point, { step: 20, dir: '/run/checkpoints/step-20' });
    assert.deepEqual(completed, [10, 20]);
    c.rollBack();
    assert.equal(c.reported('b', 30), false, 'a rollback forgets the reports of step 30');
  });

  test('a failed manifest write is kept, with its cause, and fails the run', async () => {
    const { store, release } = memoryStore(10);
    let woken = false;
    const c = new Checkpoints(['a'], store, { onFailure: () => (woken = true) });
    c.reported('a', 10);
    release();
    await c.settled();
    assert.ok(woken);
    assert.equal(c.failure?.code, 'CHECKPOINT_FAILED');
    assert.match(c.failure!.message, /^checkpoint of step 10: no space left/);
    assert.ok(c.failure!.cause instanceof Error);
  });
});

describe('recovery', () => {
  test("'fail' stops the run at the first loss", () => {
    const r = new Recovery({ policy: 'fail', maxRestarts: 3 });
    const d = r.decide('c', 'its process exited with SIGKILL', 'T');
    assert.equal(d.action, 'fail');
    assert.ok(d.action === 'fail' && d.error.code === 'WORKER_LOST' && d.error.message === "worker c lost at T: its process exited with SIGKILL (recovery policy 'fail')");
    assert.equal(r.restarts, 0);
  });

  test("'restart' rolls back in a new generation per loss, and gives up past maxRestarts", () => {
    const r = new Recovery({ policy: 'restart', maxRestarts: 2 });
    assert.deepEqual(r.decide('a', 'x', 'T'), { action: 'rollback', generation: 1 });
    assert.ok(r.isStale(0) && !r.isStale(1));
    assert.deepEqual(r.decide('b', 'x', 'T'), { action: 'rollback', generation: 2 });
    const third = r.decide('a', 'x', 'T');
    assert.ok(third.action === 'fail' && third.error.code === 'RESTARTS_EXHAUSTED' && /giving up after 2 restart\(s\)/.test(third.error.message));
    assert.equal(r.restarts, 3);
  });

  test('a rejoin from the same process uses no restart; rejoins of one incident are one rollback', () => {
    const r = new Recovery({ policy: 'restart', maxRestarts: 0 });
    assert.equal(judgeRejoin(true, 0), 'new-incident', 'the first rejoin of a run');
    assert.deepEqual(r.decide('a', 'it joined again', 'T', false), { action: 'rollback', generation: 1 });
    assert.equal(r.restarts, 0, 'not a restart, even with maxRestarts 0');
    assert.equal(judgeRejoin(false, r.generation), 'same-incident', 'b had sent nothing since that rollback');
    assert.equal(judgeRejoin(false, r.generation, true), 'welcome-again', 'a join of the stall read after b was welcomed again');
    assert.equal(judgeRejoin(true, r.generation), 'new-incident', 'b had followed the rollback: a later incident');
    assert.equal(r.decide('b', 'its process exited', 'T').action, 'fail', 'a process that died counts');
  });

  test('silences of one incident are one rollback: a worker out of reach since the rollback is of its incident', () => {
    const r = new Recovery({ policy: 'restart', maxRestarts: 1 });
    assert.equal(judgeSilence(false, r.generation, false), 'new-incident', 'the first silence of a run');
    assert.deepEqual(r.decide('a', 'no message for 20 s', 'T'), { action: 'rollback', generation: 1 });
    assert.equal(judgeSilence(false, r.generation, false), 'same-incident', 'b has sent nothing since that rollback: cut off with a');
    assert.equal(judgeSilence(true, r.generation, false), 'new-incident', 'b followed the rollback, then went silent: a new incident');
    assert.equal(judgeSilence(false, r.generation, true), 'new-incident', 'a replacement admitted since the rollback that hangs before its first message');
  });

  test('rollbacks that use no restart are bounded: more than maxRestarts in a row without getting past a step, and the run gives up', () => {
    const r = new Recovery({ policy: 'restart', maxRestarts: 2 });
    assert.equal(r.decide('a', 'rejoined', 'T', false, 12).action, 'rollback');
    assert.equal(r.decide('b', 'rejoined', 'T', false, 13).action, 'rollback', 'the cohort got past step 12: progress');
    assert.equal(r.decide('a', 'rejoined', 'T', false, 11).action, 'rollback', '1 without progress');
    assert.equal(r.decide('a', 'rejoined', 'T', false, 11).action, 'rollback', '2 without progress');
    const given = r.decide('a', 'rejoined', 'T', false, 11);
    assert.equal(given.action, 'fail');
    assert.equal(given.action === 'fail' && given.error.code, 'NO_PROGRESS');
    assert.equal(r.restarts, 0, 'none of them used a restart');
  });

  test("'elastic': a silence that began before the last loss was decided is of that incident", () => {
    assert.equal(judgeElasticSilence(30_000, 20_500, -Infinity), 'new-incident', 'no loss decided yet');
    assert.equal(judgeElasticSilence(30_000, 20_500, 20_000), 'same-incident', 'silent since 9.5 s, the loss decided at 20 s');
    assert.equal(judgeElasticSilence(45_000, 20_500, 20_000), 'new-incident', 'silent since 24.5 s: it was heard after that loss');
  });

  test("'elastic' goes on without the worker: a restart counted, no new generation", () => {
    const r = new Recovery({ policy: 'elastic', maxRestarts: 1 });
    assert.deepEqual(r.decide('a', 'x', 'T'), { action: 'continue-without' });
    assert.equal(r.generation, 0);
    assert.equal(r.restarts, 1);
    assert.equal(r.decide('a', 'x', 'T').action, 'fail');
  });
});

describe('run records', () => {
  test('events are written as typed records of metrics.jsonl and passed to onEvent', () => {
    const file = join(root, 'metrics.jsonl');
    const seen: EventRecord[] = [];
    const records = new RunRecords(
      file,
      (e) => seen.push(e),
      () => new Date(0),
    );
    records.event('worker-lost', { worker: 'b', reason: 'silent', detail: 'no message for 3.0 s', pid: 42, step: 7, generation: 0, restarts: 1, stopped: true });
    records.event('rollback', { worker: 'b', step: 5, checkpoint: '/x', generation: 1 });
    const { records: parsed, problems } = parseMetricsLines(readFileSync(file, 'utf8'));
    assert.deepEqual(problems, []);
    assert.deepEqual(
      parsed.map((r) => (r.kind === 'event' ? r.event : r.kind)),
      ['worker-lost', 'rollback'],
    );
    assert.deepEqual(seen, parsed);
    assert.equal(seen[0].time, '1970-01-01T00:00:00.000Z');
    assert.throws(
      () => new RunRecords(join(root, 'missing', 'm.jsonl')).event('given-up', { workers: [] }),
      (e: unknown) => e instanceof CohortError && e.code === 'FILE_UNWRITABLE',
    );
  });
});

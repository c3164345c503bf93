/**
 * Faults really injected into real processes (`cohort train` with its worker processes, wasm):
 * a worker killed with SIGKILL at a random step is restarted and the cohort rolls back to the
 * last global checkpoint, ending with member weights bit-identical to an undisturbed run; the
 * `fail` policy stops the run naming the worker; restarts are bounded; a run whose every process
 * died resumes with --resume; interrupted checkpoints are never loaded. The tests follow the
 * runs through their typed event records (metrics.jsonl), never through log lines.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { initBackend } from '../shared/engine/backend.js';
import { completeCheckpoints, latestCheckpoint, pruneCheckpoints, writeCheckpointManifest } from '../shared/io/checkpoint.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import type { MetricsRecord } from '../shared/metrics/records.js';
import { startCli } from './helpers/cli.js';
import { dmlReplayWeights } from './helpers/dml-reference.js';
import { startCpuLoad, type CpuLoad } from './helpers/cpu-load.js';
import { eventsOf, finished, RunRecordsFollower } from './helpers/events.js';
import { killAt, pidTracker, train } from './helpers/faults.js';
import { freePort } from './helpers/net.js';
import { asRoot, cannotRun, tool, unmet } from './helpers/requirements.js';
import { weightDifferences } from './helpers/weight-differences.js';
import { writeDmlConfig } from './helpers/dml-config.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-faults-'));
let load: CpuLoad | undefined;
after(() => {
  load?.stop();
  rmSync(root, { recursive: true, force: true });
});
const cacheDir = join(root, 'cache');
const STEPS = 30;

before(async () => {
  await initBackend({ backend: 'wasm' }); // for reading saved weights and the elastic replay (the workers' backend)
  await loadFashionMnist({ cacheDir });
  load = startCpuLoad(); // a busy CPU beside the cohort for the whole file (liveness must tell slow from dead)
});

function config(name: string, extra: Record<string, unknown> = {}): string {
  // Dropout on: recovery must be bit-identical with it too (its masks are a function of the step).
  return writeDmlConfig(name, { root, cacheDir, members: ['a', 'b', 'c'], steps: STEPS, dropout: 0.2, extra: { checkpoint: { everySteps: 5, keep: 2 }, ...extra } });
}

async function weights(run: string, member: string): Promise<Float32Array[]> {
  return (await readSavedWeights(join(root, 'runs', run, member, 'final'))).map((w) => w.values);
}

/**
 * How a killed worker's loss is reported: the launcher's exit report, or, when a heartbeat to
 * the dead process fails first, the send error (a race between the two).
 */
const KILLED = ['exited', 'unreachable'];

/** The run's only loss: of `worker`, for one of `reasons`, and the rollback it caused. */
function onlyLoss(records: MetricsRecord[], worker: string | undefined, reasons: string[]) {
  const lost = eventsOf(records, 'worker-lost');
  assert.equal(lost.length, 1, `one loss: ${JSON.stringify(lost)}`);
  if (worker !== undefined) assert.equal(lost[0].worker, worker);
  assert.ok(reasons.includes(lost[0].reason), `lost for ${lost[0].reason} (${lost[0].detail})`);
  const rollbacks = eventsOf(records, 'rollback');
  assert.equal(rollbacks.length, 1, 'one rollback');
  assert.equal(rollbacks[0].worker, lost[0].worker);
  return { lost: lost[0], rollback: rollbacks[0] };
}

/** `worker` was started again by the launcher and admitted at the rollback's step. */
function replaced(records: MetricsRecord[], worker: string, step: number): void {
  const started = eventsOf(records, 'worker-started').filter((e) => e.worker === worker);
  assert.deepEqual(
    started.map((e) => e.attempt),
    [0, 1],
    `${worker} started, then restarted`,
  );
  const admitted = eventsOf(records, 'worker-admitted').filter((e) => e.worker === worker);
  assert.equal(admitted.length, 2, `${worker} admitted twice`);
  assert.equal(admitted[1].pid, started[1].pid, 'the replacement process is the one admitted');
  assert.equal(admitted[1].startStep, step, `${worker}'s replacement starts at the rollback's step`);
}

describe('restart policy', () => {
  test('a worker killed with SIGKILL at a random step: rolled back and restarted, the weights equal an undisturbed run bit for bit', { timeout: 300_000 }, async () => {
    const step = 6 + Math.floor(mulberry32(Date.now() >>> 0)() * 20); // after the first checkpoint, before the last step
    let killedAt = 0;
    const [clean, faulty] = await Promise.all([
      train([config('clean')]),
      train(
        [config('faulty')],
        killAt('b', step, 1, (at) => (killedAt = at)),
      ),
    ]);
    assert.equal(clean.code, 0, clean.output);
    assert.equal(faulty.code, 0, faulty.output);
    // Back to the last complete checkpoint: the one of step floor(k / 5) * 5, or the one before
    // when the kill came while that one was being written.
    const { lost, rollback } = onlyLoss(faulty.records, 'b', KILLED);
    console.log(`# b SIGKILLed at step ${step}, declared lost (${lost.reason}) ${Date.parse(lost.time) - killedAt} ms later`);
    const latest = Math.floor(step / 5) * 5;
    assert.ok([latest, latest - 5].includes(rollback.step), `killed at step ${step}, rolled back to ${rollback.step}`);
    assert.equal(eventsOf(faulty.records, 'worker-started').find((e) => e.worker === 'b' && e.attempt === 1)?.delayMs, 1000, 'restarted after the backoff');
    replaced(faulty.records, 'b', rollback.step);
    for (const member of ['a', 'b', 'c']) {
      assert.deepEqual(await weights('faulty', member), await weights('clean', member), `member ${member} (killed b at step ${step})`);
    }
    // keep: 2 checkpoints are left, both complete.
    assert.equal(completeCheckpoints(join(root, 'runs', 'faulty')).length, 2);
  });

  test(
    'Adam: a worker killed after step 100 of 120, rolled back to the checkpoint of step 80: the weights equal an undisturbed run bit for bit',
    { timeout: 300_000 },
    async () => {
      // At step 80 Adam's bias corrections are far from 1 (1 - 0.999^81 = 0.078): restored in the
      // last bits wrong (tfjs's pow), DML drifted the cohort apart in the following 40 steps.
      const adam = (name: string) =>
        config(name, {
          members: ['a', 'b'].map((n) => ({ name: n, model: { name: 'mlp-student', dropout: 0.2 }, backend: 'wasm', optimizer: { name: 'adam', lr: 1e-3 } })),
          trainLimit: 120 * 32,
          checkpoint: { everySteps: 40, keep: 2 },
        });
      const [clean, faulty] = await Promise.all([train([adam('adam-clean')]), train([adam('adam-faulty')], killAt('b', 100))]);
      assert.equal(clean.code, 0, clean.output);
      assert.equal(faulty.code, 0, faulty.output);
      assert.equal(onlyLoss(faulty.records, 'b', KILLED).rollback.step, 80);
      replaced(faulty.records, 'b', 80);
      for (const member of ['a', 'b']) {
        const [actual, expected] = [await weights('adam-faulty', member), await weights('adam-clean', member)];
        assert.deepEqual(actual, expected, `member ${member}: ${weightDifferences(actual, expected)}`);
      }
    },
  );

  test(
    'a member killed while writing its part of a checkpoint: that checkpoint is never loaded, the cohort rolls back to the one before, the weights equal an undisturbed run',
    { timeout: 240_000 },
    async () => {
      // The failpoint SIGKILLs the first worker to have written its weights and optimizer state
      // for the checkpoint of step 15 but not its state.json; the others finish theirs.
      const env = { COHORT_FAILPOINT: 'checkpoint-before-state@15', COHORT_FAILPOINT_ONCE: join(root, 'mid-checkpoint.once') };
      const run = await train([config('mid-checkpoint')], () => {}, { env });
      assert.equal(run.code, 0, run.output);
      const { lost, rollback } = onlyLoss(run.records, undefined, KILLED);
      assert.equal(rollback.step, 10, `rolled back to step ${rollback.step}: the interrupted checkpoint of step 15 must not be used`);
      const beforeLoss = run.records.slice(0, run.records.indexOf(lost));
      assert.ok(!eventsOf(beforeLoss, 'checkpoint-complete').some((e) => e.step === 15), 'the interrupted checkpoint was never completed');
      for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('mid-checkpoint', member), await weights('clean', member), `member ${member} (${lost.worker} killed)`);
    },
  );

  test('a teacher killed with SIGKILL: restarted, the students roll back, their weights equal an undisturbed KD run', { timeout: 300_000 }, async () => {
    const kd = (name: string) =>
      config(name, {
        algorithm: 'kd',
        members: [
          { name: 's1', model: { name: 'mlp-student' }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } },
          { name: 's2', model: { name: 'mlp-student', seed: 5 }, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } },
        ],
        teachers: [{ name: 't', model: { name: 'mlp-teacher', dropout: 0 }, backend: 'wasm' }],
        exchange: { teacherWindow: 3 },
      });
    const step = 6 + Math.floor(mulberry32((Date.now() >>> 0) ^ 0x5bd1e995)() * 20);
    const [clean, faulty] = await Promise.all([train([kd('kd-clean')]), train([kd('kd-teacher-killed')], killAt('t', step))]);
    assert.equal(clean.code, 0, clean.output);
    assert.equal(faulty.code, 0, faulty.output);
    const { rollback } = onlyLoss(faulty.records, 't', KILLED);
    replaced(faulty.records, 't', rollback.step);
    assert.equal(eventsOf(faulty.records, 'worker-admitted').filter((e) => e.worker === 't')[1].role, 'teacher');
    for (const member of ['s1', 's2'])
      assert.deepEqual(await weights('kd-teacher-killed', member), await weights('kd-clean', member), `student ${member} (teacher killed at step ${step})`);
  });

  test('a hung worker (SIGSTOP) is declared lost after livenessMs, stopped and replaced; the weights equal an undisturbed run', { timeout: 240_000 }, async () => {
    // livenessMs 5 s: with 3 s, a CI machine loaded by other work once starved the coordinator
    // long enough for the healthy workers to think it gone (the run then gave up after 3 restarts).
    const step = 6 + Math.floor(mulberry32((Date.now() >>> 0) ^ 0x1b873593)() * 15);
    const { pids, onRecord } = pidTracker();
    let stoppedAt = 0;
    let stoppedPid = 0;
    const run = await train([config('hung', { recovery: { livenessMs: 5000, heartbeatMs: 500 } })], (record) => {
      onRecord(record);
      if (record.kind === 'step' && record.step + 1 === step && !stoppedAt) {
        stoppedPid = pids.get('b')!;
        process.kill(stoppedPid, 'SIGSTOP');
        stoppedAt = Date.now();
      }
    });
    try {
      process.kill(stoppedPid, 'SIGKILL'); // in case the run did not
    } catch {
      // gone, as it should be
    }
    assert.equal(run.code, 0, run.output);
    // Lost once (not again when its process is stopped), for its silence.
    const { lost, rollback } = onlyLoss(run.records, 'b', ['silent']);
    const detected = Date.parse(lost.time) - stoppedAt;
    console.log(`# b stopped at step ${step}, declared lost ${detected} ms later`);
    assert.ok(lost.silentMs! >= 5000 && detected < 5000 + 2000, `declared lost after ${detected} ms (livenessMs 5000)`);
    assert.equal(lost.pid, stoppedPid);
    assert.ok(lost.stopped, 'the launcher is asked to stop it');
    assert.deepEqual(
      eventsOf(run.records, 'worker-stopped').map((e) => [e.worker, e.pid]),
      [['b', stoppedPid]],
    );
    replaced(run.records, 'b', rollback.step);
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('hung', member), await weights('clean', member), `member ${member}`);
  });

  test("the 'fail' policy stops the run with an error naming the worker", { timeout: 120_000 }, async () => {
    const run = await train([config('no-restart', { recovery: { policy: 'fail' } })], killAt('c', 3));
    assert.equal(run.code, 2);
    const lost = eventsOf(run.records, 'worker-lost');
    assert.deepEqual(
      lost.map((e) => [e.worker, e.reason]),
      [['c', 'exited']],
    );
    assert.equal(finished(run.records)?.code, 'WORKER_LOST');
    assert.equal(eventsOf(run.records, 'rollback').length, 0);
    // One clear error line for the user.
    assert.match(run.output, /cohort: error: worker c lost at .*: its process exited with SIGKILL \(recovery policy 'fail'\)/);
  });

  test('restarts are bounded by maxRestarts', { timeout: 180_000 }, async () => {
    const run = await train([config('bounded', { recovery: { maxRestarts: 1, backoffMs: 100 } })], (record) => {
      // Kill a each time it joins, after it has started training.
      if (record.kind === 'event' && record.event === 'worker-admitted' && record.worker === 'a') setTimeout(() => process.kill(record.pid, 'SIGKILL'), 1500);
    });
    assert.equal(run.code, 2, run.output);
    // Whichever sees the second death first names it: the launcher (the process exited) or the
    // coordinator's socket (the peer is gone).
    const lost = eventsOf(run.records, 'worker-lost');
    assert.deepEqual(
      lost.map((e) => [e.worker, e.restarts]),
      [
        ['a', 1],
        ['a', 2],
      ],
    );
    assert.ok(
      lost.every((e) => KILLED.includes(e.reason)),
      JSON.stringify(lost),
    );
    const end = finished(run.records);
    assert.equal(end?.outcome, 'failed');
    assert.equal(end?.code, 'RESTARTS_EXHAUSTED');
    assert.match(run.output, /cohort: error: worker a lost at .*; giving up after 1 restart\(s\)/);
  });
});

describe('elastic policy', () => {
  test(
    'a member killed with SIGKILL: the others train on without it, it rejoins from its last checkpoint at the current step; all weights equal a single-process replay bit for bit',
    { timeout: 300_000 },
    async () => {
      const epochs = 4;
      const step = 6 + Math.floor(mulberry32(Date.now() >>> 0)() * 10);
      const path = config('elastic', { epochs, recovery: { policy: 'elastic', backoffMs: 100 } });
      const run = await train([path], killAt('b', step));
      assert.equal(run.code, 0, run.output);
      const lost = eventsOf(run.records, 'continue-without');
      const back = eventsOf(run.records, 'worker-admitted').filter((e) => e.rejoin);
      assert.equal(lost.length, 1, `killed at step ${step}: one loss`);
      assert.deepEqual([lost[0].worker, lost[0].others], ['b', ['a', 'c']]);
      assert.ok(KILLED.includes(eventsOf(run.records, 'worker-lost')[0].reason));
      assert.deepEqual(
        back.map((e) => e.worker),
        ['b'],
      );
      const [from, restoreStep, until] = [lost[0].step, back[0].checkpointStep!, back[0].startStep];
      console.log(`# b killed at step ${step}: steps ${from}..${until - 1} served without it; it restored the checkpoint of step ${restoreStep}`);
      assert.ok(restoreStep <= from && from <= until && until <= epochs * STEPS, `${restoreStep} <= ${from} <= ${until}`);
      assert.ok(restoreStep >= Math.floor(step / 5) * 5 - 5, `restored step ${restoreStep}, killed at ${step}`);
      assert.equal(eventsOf(run.records, 'rollback').length, 0, 'no rollback');
      // Every step is served once: the coordinator served epochs * STEPS steps (none twice: there
      // was no rollback), and a, which was never lost, reported each step once.
      assert.equal(finished(run.records)?.steps, epochs * STEPS);
      const aSteps = run.records.filter((r) => r.kind === 'step' && r.worker === 'a').map((r) => (r.kind === 'step' ? r.step : -1));
      assert.deepEqual(
        aSteps,
        Array.from({ length: epochs * STEPS }, (_, i) => i),
      );
      const expected = await dmlReplayWeights(resolveRunConfig(JSON.parse(readFileSync(path, 'utf8'))), { member: 'b', from, until, restoreStep });
      for (const [i, member] of ['a', 'b', 'c'].entries()) assert.deepEqual(await weights('elastic', member), expected[i], `member ${member}`);
    },
  );
});

describe('resume and checkpoint files', () => {
  test('--resume after every process died continues from the last complete checkpoint to the same weights', { timeout: 300_000 }, async () => {
    const path = config('resumed');
    const runDir = join(root, 'runs', 'resumed');
    const { pids, onRecord } = pidTracker();
    const cli = startCli(['train', path, '--log-every', '1'], { timeoutMs: 240_000 });
    const follower = new RunRecordsFollower(runDir, (record) => {
      onRecord(record);
      if (record.kind === 'event' && record.event === 'checkpoint-complete' && record.step === 15) {
        // Everything dies at once: the coordinator and its workers.
        for (const pid of [cli.pid!, ...pids.values()]) process.kill(pid, 'SIGKILL');
      }
    });
    const first = await cli.exited;
    follower.stop();
    assert.notEqual(first.code, 0);
    assert.ok((latestCheckpoint(runDir)?.step ?? 0) >= 15);
    const second = await train([path, '--resume']);
    assert.equal(second.code, 0, second.output);
    const resumed = eventsOf(second.records, 'resumed');
    assert.equal(resumed.length, 1);
    assert.ok([15, 20, 25].includes(resumed[0].step), `resumed from step ${resumed[0].step}`);
    // The undisturbed run of the first test, same config.
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('resumed', member), await weights('clean', member), member);
  });

  test('a checkpoint without its manifest (interrupted) is never loaded, and is pruned', async () => {
    const runDir = join(root, 'runs', 'manual');
    for (const step of [5, 10, 15]) {
      for (const m of ['a', 'b']) {
        mkdirSync(join(runDir, 'checkpoints', `step-${String(step).padStart(9, '0')}`, m), { recursive: true });
        writeFileSync(join(runDir, 'checkpoints', `step-${String(step).padStart(9, '0')}`, m, 'state.json'), JSON.stringify({ step }));
      }
    }
    await writeCheckpointManifest(runDir, 5, ['a', 'b']);
    await writeCheckpointManifest(runDir, 10, ['a', 'b']);
    // Step 20: only member a got to write before the crash; no manifest.
    mkdirSync(join(runDir, 'checkpoints', 'step-000000020', 'a'), { recursive: true });
    assert.equal(latestCheckpoint(runDir)?.step, 10);
    await assert.rejects(writeCheckpointManifest(runDir, 20, ['a', 'b']), /step-000000020: member a has not written its state/);
    await pruneCheckpoints(runDir, 1);
    assert.deepEqual(readdirSync(join(runDir, 'checkpoints')).sort(), ['step-000000010', 'step-000000015', 'step-000000020']);
    // 15 and 20 are newer than the newest complete checkpoint (a crash may have left them mid-write); a later prune removes them.
    await writeCheckpointManifest(runDir, 15, ['a', 'b']);
    await pruneCheckpoints(runDir, 1);
    assert.deepEqual(readdirSync(join(runDir, 'checkpoints')).sort(), ['step-000000015', 'step-000000020']);
  });
});

describe('a full disk', () => {
  test(
    'the disk fills up during a checkpoint: a clear error, the previous checkpoint intact; with space again, --resume ends with the undisturbed weights',
    { timeout: 300_000 },
    async (t) => {
      // The run directory on a 48 MiB tmpfs: the checkpoint of step 5 (3 x 5.1 MB of weights and
      // 5.1 MB of momentum) fits, the one of step 10 does not.
      const runDir = join(root, 'runs', 'disk-full');
      mkdirSync(runDir, { recursive: true });
      if (cannotRun(t, unmet(tool('mount', 'mount'), asRoot))) return;
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', runDir], { encoding: 'utf8' });
      if (mounted.status !== 0 && cannotRun(t, `cannot mount a small tmpfs here (${(mounted.stderr || mounted.error?.message || '').trim()})`)) return;
      try {
        const path = config('disk-full');
        const full = await train([path]);
        assert.equal(full.code, 2, full.output);
        assert.equal(finished(full.records)?.code, 'WORKER_FAILED');
        assert.match(
          full.output,
          /cohort: error: worker \w+ failed: cannot write the checkpoint \S+step-000000010\S* \(cannot write \S+: no space left on device \(ENOSPC\)\); the last complete checkpoint is untouched/,
        );
        assert.doesNotMatch(full.output, /^\s+at /m, 'no stack trace');
        assert.equal(latestCheckpoint(runDir)?.step, 5);
        assert.equal(readdirSync(join(runDir, 'checkpoints', 'step-000000010')).includes('MANIFEST.json'), false);
        // No temporary file is left behind to keep the disk full.
        assert.deepEqual(
          readdirSync(join(runDir, 'checkpoints'), { recursive: true }).filter((f) => String(f).includes('.tmp-')),
          [],
        );
        // Space again: the run resumes from step 5 and ends where an undisturbed run ends.
        assert.equal(spawnSync('mount', ['-o', 'remount,size=256m', runDir]).status, 0);
        const resumed = await train([path, '--resume']);
        assert.equal(resumed.code, 0, resumed.output);
        assert.deepEqual(
          eventsOf(resumed.records, 'resumed').map((e) => e.step),
          [5],
        );
        for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('disk-full', member), await weights('clean', member), member);
      } finally {
        spawnSync('umount', [runDir]);
      }
    },
  );
});

describe('coordinator crash', () => {
  test(
    'the coordinator killed mid-run and restarted with --resume on the same port: the workers rejoin on their own and end with the undisturbed weights',
    { timeout: 300_000 },
    async () => {
      const path = config('coordinator-crash', { recovery: { livenessMs: 3000, heartbeatMs: 500 } });
      const port = await freePort();
      const endpoint = `tcp://127.0.0.1:${port}`;
      const runDir = join(root, 'runs', 'coordinator-crash');
      const start = (extra: string[]) => startCli(extra, { timeoutMs: 240_000 });
      const first = start(['coordinator', path, '--bind', endpoint, '--insecure', '--log-every', '1']);
      const firstRecords = new RunRecordsFollower(runDir, (record) => {
        if (record.kind === 'event' && record.event === 'checkpoint-complete' && record.step === 10) first.kill('SIGKILL');
      });
      const workers = ['a', 'b', 'c'].map((m) => start(['worker', '--connect', endpoint, '--member', m, '--insecure']));
      const killed = await first.exited;
      const before = firstRecords.stop();
      assert.notEqual(killed.code, 0, 'the first coordinator was killed');
      const secondRecords = new RunRecordsFollower(runDir);
      const second = await start(['coordinator', path, '--bind', endpoint, '--insecure', '--resume', '--log-every', '1']).exited;
      const after = secondRecords.stop();
      assert.equal(second.code, 0, second.output);
      assert.deepEqual(
        eventsOf(after, 'resumed').map((e) => e.step),
        [10],
      );
      const results = await Promise.all(workers.map((w) => w.exited));
      for (const r of results) assert.equal(r.code, 0, r.output);
      // The same worker processes, which judged the first coordinator lost, joined the second on their own.
      const pidsOf = (records: MetricsRecord[]) => new Map(eventsOf(records, 'worker-admitted').map((e) => [e.worker, e.pid]));
      assert.deepEqual(pidsOf(after), pidsOf(before));
      assert.deepEqual([...pidsOf(after).values()].sort(), workers.map((w) => w.pid!).sort());
      for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('coordinator-crash', member), await weights('clean', member), member);
    },
  );
});

/**
 * Graceful stop, with real processes (`cohort train`, `cohort coordinator` + `cohort worker`,
 * wasm): a first SIGTERM or SIGINT checkpoints at the next step barrier, every worker exits and
 * the command exits with EXIT_STOPPED (75) within the bound; `--resume` then ends with the
 * weights of the undisturbed run bit for bit. A second signal stops at once (128 + signal, no
 * worker left). No worker outlives `cohort train`, even SIGKILLed. The tests follow the typed
 * event records (metrics.jsonl), never log lines.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_STOPPED, signalExitCode } from '../coordinator/stop.js';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { initBackend } from '../shared/engine/backend.js';
import { checkpointDir, completeCheckpoints } from '../shared/io/checkpoint.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import type { MetricsRecord } from '../shared/metrics/records.js';
import { startCli } from './helpers/cli.js';
import { eventsOf, finished, RunRecordsFollower } from './helpers/events.js';
import { train } from './helpers/faults.js';
import { freePort } from './helpers/net.js';
import { weightDifferences } from './helpers/weight-differences.js';
import { writeDmlConfig } from './helpers/dml-config.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-stop-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cacheDir = join(root, 'cache');
const STEPS = 60;
/** The stated bound from the signal to the exit: one step, the checkpoint's write, the shutdown, with room for a loaded 2-core machine. */
const BOUND_MS = 15_000;

before(async () => {
  await initBackend({ backend: 'wasm' });
  await loadFashionMnist({ cacheDir });
});

function config(name: string): string {
  // Dropout on: the resumed run must continue bit for bit (its masks are a function of the step).
  return writeDmlConfig(name, { root, cacheDir, members: ['a', 'b'], steps: STEPS, dropout: 0.2, extra: { checkpoint: { everySteps: 20, keep: 3 } } });
}

const runDir = (name: string) => join(root, 'runs', name);

async function weights(run: string, member: string): Promise<Float32Array[]> {
  return (await readSavedWeights(join(runDir(run), member, 'final'))).map((w) => w.values);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until none of `pids` runs, for at most `ms`; returns those still running. */
async function gone(pids: number[], ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && pids.some(alive)) await new Promise((r) => setTimeout(r, 50));
  const left = pids.filter(alive);
  for (const pid of left) process.kill(pid, 'SIGKILL'); // never leave one behind the test
  return left;
}

/** The worker pids the run's records name (started by a launcher, admitted by the coordinator). */
function workerPids(records: MetricsRecord[]): number[] {
  return [...new Set([...eventsOf(records, 'worker-admitted'), ...eventsOf(records, 'worker-started')].map((e) => e.pid))];
}

/** `cohort train` with `signals` sent once a member reports step `atStep`; the records, its exit, and how long after the first signal it exited. */
async function trainSignalled(path: string, name: string, atStep: number, signals: NodeJS.Signals[]) {
  const cli = startCli(['train', path, '--log-every', '1'], { timeoutMs: 240_000 });
  let signalledAt = 0;
  const follower = new RunRecordsFollower(runDir(name), (record) => {
    if (record.kind === 'step' && record.step >= atStep && !signalledAt) {
      signalledAt = Date.now();
      for (const signal of signals) process.kill(cli.pid!, signal);
    }
  });
  const result = await cli.exited;
  const exitMs = Date.now() - signalledAt;
  const records = follower.stop();
  return { result, records, exitMs, signalledAt };
}

describe('graceful stop of cohort train', () => {
  test(
    'SIGTERM mid-run: a checkpoint at the next step barrier, every worker gone, exit 75 within the bound; --resume ends with the undisturbed weights bit for bit',
    { timeout: 400_000 },
    async () => {
      const [clean, stopped] = await Promise.all([train([config('clean')]), trainSignalled(config('stopped'), 'stopped', 25, ['SIGTERM'])]);
      assert.equal(clean.code, 0, clean.output);
      const { result, records, exitMs } = stopped;
      assert.equal(result.code, EXIT_STOPPED, result.output);
      console.log(`# exited ${exitMs} ms after SIGTERM`);
      assert.ok(exitMs < BOUND_MS, `exited ${exitMs} ms after the signal (bound ${BOUND_MS} ms)`);
      const [request] = eventsOf(records, 'stop-requested');
      assert.equal(request?.signal, 'SIGTERM');
      assert.ok(request.step > 25 && request.step < STEPS, `barrier at step ${request.step}`);
      assert.ok(
        eventsOf(records, 'checkpoint-complete').some((e) => e.step === request.step),
        'the checkpoint at the barrier completed',
      );
      assert.ok(
        completeCheckpoints(runDir('stopped')).some((m) => m.step === request.step && m.members.join() === 'a,b'),
        'its manifest names both members',
      );
      assert.ok(existsSync(join(checkpointDir(runDir('stopped'), request.step), 'MANIFEST.json')));
      const end = finished(records);
      assert.equal(end?.outcome, 'stopped');
      assert.equal(end?.checkpointStep, request.step);
      const pids = workerPids(records);
      assert.equal(pids.length, 2);
      assert.deepEqual(await gone(pids, 2000), [], 'no worker process remains');
      // No final weights: the run did not finish.
      assert.equal(existsSync(join(runDir('stopped'), 'a', 'final')), false);
      const resumed = await train([config('stopped'), '--resume']);
      assert.equal(resumed.code, 0, resumed.output);
      assert.deepEqual(
        eventsOf(resumed.records, 'resumed').map((e) => e.step),
        [request.step],
      );
      for (const member of ['a', 'b']) {
        const [actual, expected] = [await weights('stopped', member), await weights('clean', member)];
        assert.deepEqual(actual, expected, `member ${member}: ${weightDifferences(actual, expected)}`);
      }
    },
  );

  test('a second signal stops at once: exit 128 + its number, no checkpoint at the barrier, no worker left', { timeout: 200_000 }, async () => {
    // SIGTERM then SIGINT, back to back (two of the same kind could merge into one before delivery).
    const { result, records, exitMs } = await trainSignalled(config('twice'), 'twice', 10, ['SIGTERM', 'SIGINT']);
    // Node may handle them in either order: the first asks for the stop, the second's number is in the exit code.
    const [request] = eventsOf(records, 'stop-requested');
    assert.ok(['SIGTERM', 'SIGINT'].includes(request?.signal), JSON.stringify(request));
    const second = request.signal === 'SIGTERM' ? 'SIGINT' : 'SIGTERM';
    assert.equal(result.code, signalExitCode(second), result.output);
    assert.ok(exitMs < BOUND_MS, `exited ${exitMs} ms after the signals`);
    const end = finished(records);
    assert.equal(end?.outcome, 'failed');
    assert.equal(end?.code, 'ABORTED');
    // The first signal asked for a checkpoint at the barrier; the second came before it was written.
    assert.ok(!completeCheckpoints(runDir('twice')).some((m) => m.step === request.step), `no checkpoint at the barrier (step ${request.step})`);
    assert.deepEqual(await gone(workerPids(records), 2000), [], 'no worker process remains');
  });

  test('no worker outlives cohort train killed with SIGKILL (the stdin lifeline)', { timeout: 200_000 }, async () => {
    const { result, records } = await trainSignalled(config('killed'), 'killed', 10, ['SIGKILL']);
    assert.equal(result.signal, 'SIGKILL');
    const pids = workerPids(records);
    assert.equal(pids.length, 2);
    assert.deepEqual(await gone(pids, 5000), [], 'every worker exited within 5 s of its launcher');
  });
});

describe('graceful stop of cohort coordinator', () => {
  test('SIGINT to the coordinator: a checkpoint at the barrier, the separately started workers told to exit (75), exit 75; --resume completes', { timeout: 300_000 }, async () => {
    const path = config('coordinator');
    const endpoint = `tcp://127.0.0.1:${await freePort()}`;
    const start = (args: string[]) => startCli(args, { timeoutMs: 240_000 });
    const coordinator = start(['coordinator', path, '--bind', endpoint, '--insecure', '--log-every', '1']);
    let signalledAt = 0;
    const follower = new RunRecordsFollower(runDir('coordinator'), (record) => {
      if (record.kind === 'step' && record.step >= 25 && !signalledAt) {
        signalledAt = Date.now();
        coordinator.kill('SIGINT');
      }
    });
    const workers = ['a', 'b'].map((m) => start(['worker', '--connect', endpoint, '--member', m, '--insecure']));
    const result = await coordinator.exited;
    const exitMs = Date.now() - signalledAt;
    const records = follower.stop();
    assert.equal(result.code, EXIT_STOPPED, result.output);
    assert.ok(exitMs < BOUND_MS, `exited ${exitMs} ms after SIGINT`);
    const [request] = eventsOf(records, 'stop-requested');
    assert.equal(request?.signal, 'SIGINT');
    assert.ok(completeCheckpoints(runDir('coordinator')).some((m) => m.step === request.step));
    assert.equal(finished(records)?.outcome, 'stopped');
    // Stopped, not done: they exit 75 too (a Kubernetes Job replaces them for the resumed run).
    for (const w of await Promise.all(workers.map((x) => x.exited))) assert.equal(w.code, EXIT_STOPPED, w.output);
    const resumedRecords = new RunRecordsFollower(runDir('coordinator'));
    const again = start(['coordinator', path, '--bind', endpoint, '--insecure', '--resume', '--log-every', '1']);
    const more = ['a', 'b'].map((m) => start(['worker', '--connect', endpoint, '--member', m, '--insecure']));
    const second = await again.exited;
    const after = resumedRecords.stop();
    assert.equal(second.code, 0, second.output);
    assert.deepEqual(
      eventsOf(after, 'resumed').map((e) => e.step),
      [request.step],
    );
    for (const w of await Promise.all(more.map((x) => x.exited))) assert.equal(w.code, 0, w.output);
  });
});

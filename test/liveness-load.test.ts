/**
 * Liveness on a starved machine (busy-loop processes beside the cohort for the whole test,
 * helpers/cpu-load.ts): 8 DML members with the default recovery settings finish with no worker
 * lost; the coordinator's main thread blocked for livenessMs + 3 s (a failpoint: its process,
 * and ZeroMQ's I/O thread, alive) costs nothing: no worker lost, no rollback, the undisturbed
 * weights; the coordinator frozen (SIGSTOP) for livenessMs + 3 s under the `restart` policy ends
 * with the undisturbed run's weights after at most one rollback and one restart. Followed through
 * the typed event records.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { initBackend } from '../shared/engine/backend.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { startCli } from './helpers/cli.js';
import { startCpuLoad, type CpuLoad } from './helpers/cpu-load.js';
import { eventsOf, finished, RunRecordsFollower } from './helpers/events.js';
import { runDirOf, train } from './helpers/faults.js';
import { writeDmlConfig } from './helpers/dml-config.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-liveness-'));
const cacheDir = join(root, 'cache');
let load: CpuLoad | undefined;
before(async () => {
  await initBackend({ backend: 'wasm' });
  await loadFashionMnist({ cacheDir });
  load = startCpuLoad();
});
after(() => {
  load?.stop();
  rmSync(root, { recursive: true, force: true });
});

function config(name: string, members: string[], steps: number, extra: Record<string, unknown> = {}): string {
  return writeDmlConfig(name, { root, cacheDir, members, steps, extra: { checkpoint: { everySteps: 5, keep: 2 }, ...extra } });
}

async function weights(run: string, member: string): Promise<Float32Array[]> {
  return (await readSavedWeights(join(root, 'runs', run, member, 'final'))).map((w) => w.values);
}

describe('liveness under CPU load', () => {
  test('8 DML members, default recovery settings, a busy CPU: the run completes with no worker lost', { timeout: 480_000 }, async () => {
    const started = Date.now();
    const run = await train([config('eight', ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], 20)], () => {}, { timeoutMs: 450_000 });
    console.log(`# 8 members under load (${load?.processes} busy loops): exit ${run.code} after ${((Date.now() - started) / 1000).toFixed(0)} s`);
    assert.equal(run.code, 0, run.output);
    assert.deepEqual(eventsOf(run.records, 'worker-lost'), []);
    assert.deepEqual(eventsOf(run.records, 'rollback'), []);
    assert.equal(finished(run.records)?.outcome, 'complete');
  });

  const recovery = { policy: 'restart', livenessMs: 5000, heartbeatMs: 500 };
  let clean: Promise<void> | undefined;
  /** The undisturbed 3-member run the frozen and busy coordinators are compared with (run once). */
  const cleanRun = () =>
    (clean ??= train([config('frozen-clean', ['a', 'b', 'c'], 30, { recovery })], () => {}, { timeoutMs: 300_000 }).then((run) => assert.equal(run.code, 0, run.output)));

  test(
    "the coordinator's main thread blocked for livenessMs + 3 s (its process alive): no worker lost, no rollback, the weights of the undisturbed run",
    { timeout: 480_000 },
    async () => {
      await cleanRun();
      const path = config('busy', ['a', 'b', 'c'], 30, { recovery });
      // A failpoint blocks the coordinator's event loop after step 12 (as a long synchronous
      // computation would): it sends and reads nothing, but ZeroMQ's I/O thread answers pings.
      const run = await train([path], () => {}, {
        timeoutMs: 300_000,
        env: { COHORT_FAILPOINT: 'coordinator-served@12:block=8000', COHORT_FAILPOINT_ONCE: join(root, 'busy.once') },
      });
      assert.equal(run.code, 0, run.output);
      const lost = eventsOf(run.records, 'worker-lost');
      const stalls = eventsOf(run.records, 'coordinator-stalled');
      console.log(
        `# coordinator blocked 8 s: ${lost.length} loss(es), ${eventsOf(run.records, 'rollback').length} rollback(s), stalls ${JSON.stringify(stalls.map((e) => e.gapMs))}`,
      );
      assert.ok(
        stalls.some((e) => e.gapMs >= 8000),
        'the coordinator was blocked (it recorded its own stall)',
      );
      assert.deepEqual(lost, [], 'no worker lost (none joined again)');
      assert.deepEqual(eventsOf(run.records, 'rollback'), []);
      for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('busy', member), await weights('frozen-clean', member), `member ${member}`);
    },
  );

  test('the coordinator frozen (SIGSTOP) for livenessMs + 3 s: at most one rollback and one restart, the weights of the undisturbed run', { timeout: 480_000 }, async () => {
    await cleanRun();
    const path = config('frozen', ['a', 'b', 'c'], 30, { recovery });
    let frozenAt = 0;
    const coordinator = { pid: 0 }; // `cohort train`: the coordinator runs in the CLI's process
    const follower = new RunRecordsFollower(runDirOf(path), (record) => {
      if (record.kind === 'step' && record.step === 12 && !frozenAt && coordinator.pid) {
        frozenAt = Date.now();
        process.kill(coordinator.pid, 'SIGSTOP');
        setTimeout(() => process.kill(coordinator.pid, 'SIGCONT'), 5000 + 3000);
      }
    });
    const cli = startCli(['train', path, '--log-every', '1'], { timeoutMs: 300_000 });
    coordinator.pid = cli.pid ?? 0;
    const result = await cli.exited;
    const records = follower.stop();
    assert.equal(result.code, 0, result.output);
    assert.ok(frozenAt > 0, 'the coordinator was frozen');
    const rollbacks = eventsOf(records, 'rollback');
    const lost = eventsOf(records, 'worker-lost');
    console.log(
      `# frozen 8 s: ${lost.length} loss(es) (${lost.map((e) => `${e.worker} ${e.reason}${e.sameIncident ? ' same incident' : ''}`).join(', ')}), ${rollbacks.length} rollback(s), restarts ${finished(records)?.restarts}`,
    );
    const story = () =>
      result.output
        .split('\n')
        .filter((l) => l.startsWith('coordinator:') || / rolling back | joining again/.test(l))
        .join('\n');
    assert.ok(rollbacks.length <= 1, `at most one rollback: ${JSON.stringify(rollbacks)}\n${story()}`);
    assert.ok((finished(records)?.restarts ?? 0) <= 1, 'at most one restart used');
    assert.ok(lost.filter((e) => e.counted !== false).length <= 1, `at most one loss counted as a restart: ${JSON.stringify(lost)}`);
    assert.ok(new Set(lost.map((e) => e.worker)).size === lost.length, `each worker lost at most once: ${JSON.stringify(lost)}`);
    for (const member of ['a', 'b', 'c']) assert.deepEqual(await weights('frozen', member), await weights('frozen-clean', member), `member ${member}`);
  });
});

/**
 * coordinator/worker-processes.ts with real processes (`node -e`): what the launchers do with
 * their workers' processes, whatever starts them. A crash is reported once and restarted after
 * the doubling backoff; a clean exit (0, or the graceful stop's 75) is not a loss; a process the
 * coordinator declared lost is stopped and its exit is not reported again; `settle` ends a
 * process that outlives the run, and no restart follows it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { endAfter, WorkerProcesses, type WorkerProcess } from '../coordinator/worker-processes.js';
import type { CoordinatorControl } from '../coordinator/run-coordinator.js';
import { EXIT_STOPPED } from '../coordinator/stop.js';

type Seen = { kind: 'started' | 'lost' | 'stopped'; worker: string; detail: string | number; at: number };

/** A control that records what the launcher told the coordinator. */
function recordingControl(): { control: CoordinatorControl; seen: Seen[] } {
  const seen: Seen[] = [];
  const control: CoordinatorControl = {
    started: (worker, _pid, attempt, delayMs) => void seen.push({ kind: 'started', worker, detail: `${attempt}/${delayMs}`, at: Date.now() }),
    lost: (worker, reason) => void seen.push({ kind: 'lost', worker, detail: reason, at: Date.now() }),
    stopped: (worker, pid) => void seen.push({ kind: 'stopped', worker, detail: pid, at: Date.now() }),
  };
  return { control, seen };
}

/** A process that runs `script` (its standard input a pipe, as the launchers' lifelines are). */
const nodeProcess = (script: string): WorkerProcess => ({ child: spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'ignore', 'ignore'] }) });

/** A launcher's processes under `policy` with `backoffMs`, each started by `start`, attached to a recording control. */
function launcher(policy: 'restart' | 'fail', backoffMs: number, start: () => WorkerProcess) {
  const { control, seen } = recordingControl();
  const workers = new WorkerProcesses({
    recovery: { policy, backoffMs, maxRestarts: 3, livenessMs: 20_000, heartbeatMs: 1000 },
    log: () => {},
    start,
    describeExit: (_name, code, signal) => `exit ${signal ?? code}`,
  });
  workers.attach(control);
  return { workers, seen };
}

async function until(check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(20);
  }
}

describe('worker processes of a launcher', () => {
  test('a crash is reported and restarted after the backoff, which doubles; a clean exit is no loss', async () => {
    const scripts = ['process.exit(3)', 'process.exit(3)', `process.exit(${EXIT_STOPPED})`];
    let starts = 0;
    const { workers, seen } = launcher('restart', 300, () => nodeProcess(scripts[starts++]));
    workers.start('a');
    await until(() => starts === 3 && workers.running().length === 0);
    await sleep(700); // no fourth start after the graceful stop's exit
    assert.equal(starts, 3);
    const lost = seen.filter((s) => s.kind === 'lost');
    assert.deepEqual(
      lost.map((s) => s.detail),
      ['exit 3', 'exit 3'],
    );
    const started = seen.filter((s) => s.kind === 'started');
    assert.deepEqual(
      started.map((s) => s.detail),
      ['0/0', '1/300', '2/600'],
    );
    // Each restart waited its backoff after the loss before it.
    assert.ok(started[1].at - lost[0].at >= 290, `${started[1].at - lost[0].at} ms`);
    assert.ok(started[2].at - lost[1].at >= 590, `${started[2].at - lost[1].at} ms`);
    await workers.settle(() => assert.fail('nothing is left running'));
  });

  test("policy 'fail': the crash is reported and nothing is restarted", async () => {
    let starts = 0;
    const { workers, seen } = launcher('fail', 10, () => (starts++, nodeProcess('process.kill(process.pid, "SIGKILL")')));
    workers.start('a');
    await until(() => seen.some((s) => s.kind === 'lost'));
    await sleep(300);
    assert.equal(starts, 1);
    assert.deepEqual(
      seen.filter((s) => s.kind === 'lost').map((s) => s.detail),
      ['exit SIGKILL'],
    );
  });

  test('a worker declared lost is stopped, its exit not reported again, and replaced; another pid is left alone', async () => {
    let starts = 0;
    const { workers, seen } = launcher('restart', 50, () => (starts++, nodeProcess('setInterval(() => {}, 1000)'))); // hangs
    workers.start('a');
    const [first] = workers.running();
    workers.stopLost('a', first.child.pid! + 100_000, () => assert.fail('not its pid'));
    assert.equal(first.child.exitCode, null);
    workers.stopLost('a', first.child.pid!, ({ child }) => child.kill('SIGKILL'));
    await until(() => starts === 2);
    assert.equal(seen.filter((s) => s.kind === 'lost').length, 0, 'the coordinator already knows: no second report');
    assert.deepEqual(
      seen.filter((s) => s.kind === 'stopped').map((s) => s.detail),
      [first.child.pid],
    );
    // The run ends: the replacement (still hanging) is ended, and not restarted.
    const settled = Date.now();
    await workers.settle((worker, exited) => endAfter(worker, exited, { kill: 200 }));
    assert.ok(Date.now() - settled < 5_000);
    assert.equal(workers.running().length, 0);
    await sleep(200);
    assert.equal(starts, 2);
  });

  test('settle: a process whose lifeline closes exits; the kill timer is not needed', async () => {
    // Exits with code 9 when its standard input ends (a lifeline), else runs on.
    const { workers, seen } = launcher('restart', 50, () => nodeProcess('process.stdin.on("end", () => process.exit(9)); process.stdin.resume()'));
    workers.start('a');
    const [worker] = workers.running();
    await workers.settle((w, exited) => endAfter(w, exited, { closeInput: 0, kill: 15_000 }));
    assert.equal(worker.child.exitCode, 9);
    assert.equal(seen.filter((s) => s.kind === 'lost').length, 0, 'an exit after the run is no loss');
  });
});

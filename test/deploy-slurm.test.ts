/**
 * The Slurm batch script (deploy/slurm/cohort.sbatch), run for real by bash with stand-ins for
 * Slurm (`scontrol`, and an `srun` that starts the step's tasks locally with SLURM_PROCID and
 * SLURM_LOCALID set as Slurm sets them) and for `cohort` (it records its arguments): on a
 * 2-node x 4-GPU allocation it makes the run's keys on shared storage once, starts the
 * coordinator on the first node, and one worker per GPU (task i = the config's i-th worker on
 * GPU i mod 4, on webgpu unless COHORT_BACKEND says otherwise) connecting to it; a worker that
 * fails is started again; after a requeue the
 * keys are reused and the coordinator resumes when a complete checkpoint exists; a failed
 * coordinator fails the job. Every option the script passes exists in the real CLI.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BACKEND_CHOICES } from '../shared/engine/backend.js';
import { ROOT, runCli } from './helpers/cli.js';

const SCRIPT = join(ROOT, 'deploy', 'slurm', 'cohort.sbatch');
const root = mkdtempSync(join(tmpdir(), 'cohort-slurm-'));
after(() => rmSync(root, { recursive: true, force: true }));
const bin = join(root, 'bin');
const calls = join(root, 'calls');
mkdirSync(bin);

const tool = (name: string, body: string) => {
  writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
  chmodSync(join(bin, name), 0o755);
};
tool('scontrol', `echo "scontrol $*" >> '${calls}'\n[ "$1" = requeue ] && exit 0\n[ "$1 $2" = "show hostnames" ] || exit 9\nprintf 'gpu01\\ngpu02\\n'`);
// srun: the step's tasks, started here, with the variables Slurm gives each task.
tool(
  'srun',
  `echo "srun $*" >> '${calls}'
n=1; g=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n=\${1#*=} ;;
    --ntasks-per-node=*) g=\${1#*=} ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
pids=()
for ((i = 0; i < n; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % g)) SLURM_NODEID=$((i / g)) "$@" &
  pids+=($!)
done
status=0
for p in "\${pids[@]}"; do wait "$p" || status=$?; done
exit $status`,
);
// cohort: records its arguments; keys makes the files; a worker whose fail-N file exists fails once.
tool(
  'cohort',
  `echo "cohort $*" >> '${calls}'
case "$1" in
  keys) mkdir -p "$2" && touch "$2/coordinator.key" ;;
  coordinator)
    if [ -n "\${FAKE_COORDINATOR_STOP:-}" ]; then
      # Like cohort: TERM stops it gracefully (exit 75).
      trap 'echo "coordinator stopped by TERM" >> '"'"'${calls}'"'"'; exit 75' TERM
      touch '${root}'/coordinator-running
      while :; do sleep 0.05; done
    fi
    sleep 0.2; exit "\${FAKE_COORDINATOR_EXIT:-0}" ;;
  worker)
    while [ $# -gt 0 ]; do [ "$1" = --member-index ] && index=$2; shift; done
    if [ -e '${root}'/fail-$index ]; then rm '${root}'/fail-$index; exit 7; fi ;;
esac`,
);

const config = join(root, 'run.yaml');
writeFileSync(config, 'name: r\n');

function sbatch(env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string; calls: string[] } {
  rmSync(calls, { force: true });
  const r = spawnSync('bash', [SCRIPT, 'run.yaml'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: `${bin}:/usr/bin:/bin`, HOME: root, SLURM_JOB_ID: '42', SLURM_JOB_NODELIST: 'gpu[01-02]', SLURM_NTASKS: '8', SLURM_NTASKS_PER_NODE: '4', ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, calls: existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : [] };
}

const workerCalls = (lines: string[]) => lines.filter((l) => l.startsWith('cohort worker '));
const keys = join(root, 'cohort-keys-42');

test('the #SBATCH header asks for whole GPU nodes: one task per GPU, the job requeued after a node failure', () => {
  const header = new Map([...readFileSync(SCRIPT, 'utf8').matchAll(/^#SBATCH --([a-z-]+)(?:=(.*))?$/gm)].map((m) => [m[1], m[2] ?? '']));
  assert.equal(header.get('gres'), `gpu:${header.get('ntasks-per-node')}`, 'one task per GPU of a node');
  assert.ok(header.has('requeue'));
  assert.ok(Number(header.get('nodes')) >= 1);
  assert.equal(spawnSync('bash', ['-n', SCRIPT]).status, 0, 'bash -n');
});

test('a fresh job: keys made once on shared storage, the coordinator on the first node, one worker per GPU; a failed worker is restarted', () => {
  writeFileSync(join(root, 'fail-5'), '');
  const r = sbatch();
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.calls[0], 'scontrol show hostnames gpu[01-02]');
  assert.equal(r.calls[1], `cohort keys ${keys}`);
  assert.ok(r.calls.includes(`cohort coordinator ${config} --bind tcp://0.0.0.0:5555 --keys ${keys}`), r.calls.join('\n'));
  const srun = r.calls.find((l) => l.startsWith('srun '))!;
  assert.match(srun, /^srun --ntasks=8 --ntasks-per-node=4 --gres=gpu:4 --gpu-bind=none --kill-on-bad-exit=0 bash -c /);
  const workers = workerCalls(r.calls);
  const expected = Array.from(
    { length: 8 },
    (_, i) => `cohort worker --connect tcp://gpu01:5555 --member-index ${i} --config ${config} --backend webgpu --gpu ${i % 4} --keys ${keys} --timeout 600`,
  );
  // Worker 5 failed once and was started again; every other worker ran once.
  assert.deepEqual([...workers].sort(), [...expected, expected[5]].sort());
  assert.match(r.stderr, /cohort\.sbatch: worker 5 exited with 7; restarting it \(restart 1 of 3\)/);
  assert.match(r.stdout, /coordinator on gpu01:5555, 8 workers \(4 per node\), keys .*cohort-keys-42, backend webgpu/);
});

test("COHORT_BACKEND: webgpu by default, tensorflow-gpu for the CUDA 11 path, one of the CLI's backends or a clear error; COHORT_GPU", () => {
  const r = sbatch({ COHORT_BACKEND: 'tensorflow-gpu' });
  assert.equal(r.status, 0, r.stderr);
  const workers = workerCalls(r.calls);
  assert.equal(workers.length, 8);
  for (const w of workers) assert.match(w, / --backend tensorflow-gpu --gpu [0-3] /);
  // The coordinator has no backend option: the workers' backend is theirs alone.
  assert.ok(r.calls.filter((l) => l.startsWith('cohort coordinator ')).every((l) => !l.includes('--backend')));
  const bad = sbatch({ COHORT_BACKEND: 'cuda' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /cohort\.sbatch: COHORT_BACKEND=cuda is not a backend \(auto, tensorflow-gpu, webgpu, tensorflow, wasm, cpu\)/);
  assert.deepEqual(
    bad.calls.filter((l) => l.startsWith('cohort ')),
    [],
    'nothing started',
  );
  // Tasks bound to one GPU each see it as adapter 0: COHORT_GPU=0.
  const bound = sbatch({ COHORT_GPU: '0' });
  assert.equal(bound.status, 0, bound.stderr);
  assert.deepEqual(
    workerCalls(bound.calls).map((w) => /--gpu (\d+) /.exec(w)![1]),
    Array(8).fill('0'),
  );
  // The script's list is the CLI's.
  const listed = /^\s*([a-z-]+(?: \| [a-z-]+)*)\) ;;$/m.exec(readFileSync(SCRIPT, 'utf8'));
  assert.ok(listed, 'the script checks COHORT_BACKEND against a list');
  assert.deepEqual(listed[1].split(' | '), [...BACKEND_CHOICES]);
});

test('after a requeue: the keys are reused and the coordinator resumes from a complete checkpoint', () => {
  const runDir = join(root, 'runs', 'r');
  mkdirSync(join(runDir, 'checkpoints', 'step-000000400'), { recursive: true });
  // Without a complete checkpoint (no MANIFEST.json yet): a fresh start.
  let r = sbatch({ COHORT_RUN_DIR: runDir });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(!r.calls.some((l) => l.startsWith('cohort keys')), 'keys exist: not made again');
  assert.ok(r.calls.includes(`cohort coordinator ${config} --bind tcp://0.0.0.0:5555 --keys ${keys}`));
  writeFileSync(join(runDir, 'checkpoints', 'step-000000400', 'MANIFEST.json'), '{}');
  r = sbatch({ COHORT_RUN_DIR: runDir, COHORT_PORT: '6000' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.calls.includes(`cohort coordinator ${config} --bind tcp://0.0.0.0:6000 --keys ${keys} --resume`), r.calls.join('\n'));
  assert.equal(workerCalls(r.calls).filter((l) => l.includes('--connect tcp://gpu01:6000 ')).length, 8);
});

test('the time limit: Slurm signals the script ahead of it, which stops the coordinator gracefully (TERM) and requeues the job once it exits 75', { timeout: 60_000 }, async () => {
  const header = readFileSync(SCRIPT, 'utf8');
  const signal = /^#SBATCH --signal=B:TERM@(\d+)$/m.exec(header);
  assert.ok(signal && Number(signal[1]) >= 60, 'TERM to the batch script at least a minute before the time limit');
  rmSync(calls, { force: true });
  rmSync(join(root, 'coordinator-running'), { force: true });
  const child = spawn('bash', [SCRIPT, 'run.yaml'], {
    cwd: root,
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
      HOME: root,
      SLURM_JOB_ID: '42',
      SLURM_JOB_NODELIST: 'gpu[01-02]',
      SLURM_NTASKS: '8',
      SLURM_NTASKS_PER_NODE: '4',
      FAKE_COORDINATOR_STOP: '1',
    },
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  while (!existsSync(join(root, 'coordinator-running')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  child.kill('SIGTERM'); // what --signal=B:TERM@N sends
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await exited;
  clearTimeout(timer);
  const lines = readFileSync(calls, 'utf8').trim().split('\n');
  assert.equal(code, 0, stderr);
  assert.ok(lines.includes('coordinator stopped by TERM'), lines.join('\n'));
  assert.equal(lines.at(-1), 'scontrol requeue 42', 'requeued after the coordinator stopped');
  assert.match(stderr, /cohort\.sbatch: the run stopped with a checkpoint; requeueing job 42/);
});

test('a coordinator that fails fails the job; a missing config is a clear error', () => {
  const r = sbatch({ FAKE_COORDINATOR_EXIT: '2' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /cohort\.sbatch: the coordinator failed \(exit 2\); stopping the workers/);
  const missing = spawnSync('bash', [SCRIPT, 'nope.yaml'], { cwd: root, encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin`, SLURM_JOB_ID: '42' } });
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /cannot read the run config nope\.yaml/);
});

test('every option the script passes to cohort is one the real CLI accepts', { timeout: 120_000 }, async () => {
  const r = sbatch();
  const used = new Map<string, Set<string>>();
  for (const line of r.calls.filter((l) => l.startsWith('cohort '))) {
    const [, command, ...rest] = line.split(' ');
    const set = used.get(command) ?? new Set<string>();
    for (const w of rest) if (w.startsWith('--')) set.add(w);
    used.set(command, set);
  }
  used.get('coordinator')!.add('--resume');
  assert.deepEqual([...used.keys()].sort(), ['coordinator', 'worker']);
  const helps = await Promise.all([...used.keys(), 'keys'].map((c) => runCli([c, '--help'], {}, 60_000)));
  [...used.entries()].forEach(([command, options], i) => {
    assert.equal(helps[i].code, 0);
    const listed = new Set([...(helps[i].stdout.split(/^Options:$/m)[1] ?? '').matchAll(/^ {2}(--[a-z][a-z-]*)/gm)].map((m) => m[1]));
    for (const o of options) assert.ok(listed.has(o), `cohort ${command} has ${o}`);
  });
  assert.match(helps.at(-1)!.stdout, /^cohort keys <dir>/);
});

/**
 * `cohort train CONFIG` on one machine: the coordinator runs in this process and every member
 * and teacher of the config is started as its own worker process (`cohort worker`, pinned to
 * the config's GPU), whose output is relayed line by line with its name in front. A worker that
 * exits before the run is complete is reported to the coordinator and, with the `restart` or
 * `elastic` recovery policy, started again after a backoff (the coordinator rolls the cohort
 * back to the last checkpoint, or lets the others go on, and stops the run after `maxRestarts`). An algorithm made of
 * stages runs them one after the other (TAKD: a chain of KD runs, the teacher teaching the first
 * member, the assistant, whose final weights then teach the next, and so on).
 *
 * No worker outlives this process, however it ends: each worker's standard input is a pipe from
 * here (`cohort worker --lifeline`), and a worker exits as soon as it closes, which the system
 * does when this process dies (SIGKILL included). The workers run in their own process group, so
 * a Ctrl-C on the terminal reaches only this process, which stops the run gracefully
 * (`stopRequest`, coordinator/stop.ts); aborting `signal` (a second signal) kills the workers at once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runKeys } from '../shared/protocol/curve.js';
import { algorithmEntry } from '../shared/algorithms/registry.js';
import { runDirectory, type RunConfig } from '../shared/config/run-config.js';
import { createProgressDisplay } from './progress-display.js';
import { runCoordinator, type RunSummary } from './run-coordinator.js';
import { endAfter, WorkerProcesses } from './worker-processes.js';

export interface LaunchOptions {
  config: RunConfig;
  /** Steps between progress lines. */
  logEvery?: number;
  /** Overrides every worker's backend (e.g. wasm for a CPU-only machine). */
  backend?: string;
  /** Continue the run from its last complete checkpoint. */
  resume?: boolean;
  /** Turn CURVE off (the run is on loopback only). By default each run gets its own keys in RUN/keys. */
  insecure?: boolean;
  /** Redraw progress in place (default: when stdout is a terminal); false: plain lines through `log`. */
  interactive?: boolean;
  /** Aborting asks for a graceful stop: a checkpoint at the next step barrier, then every worker exits (RunSummary.stopped). */
  stopRequest?: AbortSignal;
  /** Aborting stops at once: the workers are killed (SIGKILL), no checkpoint; the run rejects with the reason. */
  signal?: AbortSignal;
  /** Called with every worker process started (tests use it to inject faults). */
  onSpawn?: (name: string, child: ChildProcess) => void;
  log?: (line: string) => void;
}

/** The cohort CLI beside this module (cli.ts under tsx, cli.js when built), whatever script runs the launcher. */
const here = fileURLToPath(import.meta.url);
const CLI = join(dirname(here), '..', `cli${extname(here)}`);

function relay(child: ChildProcess, name: string, log: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) createInterface({ input: stream }).on('line', (line) => log(`[${name}] ${line}`));
  }
}

export async function trainLocally(options: LaunchOptions): Promise<RunSummary> {
  const { config } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const plan = algorithmEntry(config.algorithm).stages;
  if (plan === 'one run') return trainOnce(options);
  let summary: RunSummary | undefined;
  const stages = plan.of(config);
  for (const [i, stage] of stages.entries()) {
    log(`${config.algorithm}: stage ${i + 1}/${stages.length}: ${stage.teachers.map((t) => t.name).join(' + ')} -> ${stage.members.map((m) => m.name).join(' + ')}`);
    summary = await trainOnce({ ...options, config: stage });
    if (summary.stopped) return summary;
  }
  return summary!;
}

async function trainOnce(options: LaunchOptions): Promise<RunSummary> {
  const { config } = options;
  // One display for the coordinator's lines and the workers' relayed output: on a terminal they
  // print above the progress lines.
  const display = createProgressDisplay({
    workers: [...config.members, ...config.teachers].map((w) => w.name),
    epochs: config.epochs,
    log: options.log,
    interactive: options.interactive,
  });
  const log = (line: string) => display.log(line);
  const keysDir = join(runDirectory(config), 'keys');
  const curve = options.insecure ? undefined : runKeys(keysDir);
  let endpoint = '';
  const workers = new WorkerProcesses({
    recovery: config.recovery,
    log,
    start: (name) => ({ child: spawnWorker(name, endpoint, curve ? keysDir : undefined, options, log) }),
    describeExit: (_name, code, signal) => `its process exited with ${signal ?? `code ${code}`}`,
  });
  // A second signal: every worker killed now (the coordinator's run then rejects with the reason).
  const killAll = () => workers.running().forEach(({ child }) => child.kill('SIGKILL'));
  options.signal?.addEventListener('abort', killAll, { once: true });
  try {
    return await runCoordinator({
      config,
      bind: 'tcp://127.0.0.1:*',
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.stopRequest ? { stopRequest: options.stopRequest } : {}),
      logEvery: options.logEvery,
      display,
      resume: options.resume,
      ...(curve ? { curve } : {}),
      onControl: (control) => workers.attach(control),
      // A hung worker: killed, and its exit starts the replacement.
      onWorkerLost: (name, pid) => workers.stopLost(name, pid, ({ child }) => child.kill('SIGKILL')),
      onListening: (bound) => {
        endpoint = bound;
        for (const worker of [...config.members, ...config.teachers]) workers.start(worker.name);
      },
      log,
    });
  } finally {
    if (options.signal?.aborted) killAll();
    options.signal?.removeEventListener('abort', killAll);
    await workers.settle((worker, exited) => endAfter(worker, exited, { kill: 10_000 }));
  }
}

/** Starts `cohort worker` for member or teacher `name` in its own process group, its standard input its lifeline, its output relayed. */
function spawnWorker(name: string, endpoint: string, keysDir: string | undefined, options: LaunchOptions, log: (line: string) => void): ChildProcess {
  const args = [...process.execArgv, CLI, 'worker', '--connect', endpoint, '--member', name, '--lifeline', ...(keysDir ? ['--keys', keysDir] : ['--insecure'])];
  if (options.backend) args.push('--backend', options.backend);
  // stdin: the lifeline (never written; closed when this process ends). detached: a process group of its own.
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: process.env, detached: true });
  child.stdin!.on('error', () => {}); // the worker gone: its exit is reported by WorkerProcesses
  options.onSpawn?.(name, child);
  relay(child, name, log);
  return child;
}

/**
 * `cohort train CONFIG` on one machine: the coordinator runs in this process and every member
 * and teacher of the config is started as its own worker process (`cohort worker`, pinned to
 * the config's GPU), whose output is relayed line by line with its name in front. A worker that
 * exits before the run is complete stops the run with an error naming it. TAKD runs as a chain
 * of KD stages, one run each: the teacher teaches the first member (the assistant), whose final
 * weights then teach the next, and so on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import type { RunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { runCoordinator, type RunSummary } from './run-coordinator.js';

export interface LaunchOptions {
  config: RunConfig;
  /** Steps between progress lines. */
  logEvery?: number;
  /** Overrides every worker's backend (e.g. wasm for a CPU-only machine). */
  backend?: string;
  log?: (line: string) => void;
}

function relay(child: ChildProcess, name: string, log: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) createInterface({ input: stream }).on('line', (line) => log(`[${name}] ${line}`));
  }
}

/** The KD stages of a TAKD run: stage i trains members[i] from stage i - 1's member (stage 0: the teachers). */
export function takdStages(config: RunConfig): RunConfig[] {
  return config.members.map((member, i) => {
    const name = `${config.name}-stage${i + 1}`;
    const previous = config.members[i - 1];
    const teachers =
      i === 0
        ? config.teachers
        : [{ ...previous, checkpoint: join(config.runDir, `${config.name}-stage${i}`, previous.name, 'final') }];
    return { ...config, name, algorithm: 'kd', members: [member], teachers };
  });
}

export async function trainLocally(options: LaunchOptions): Promise<RunSummary> {
  const { config } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  if (config.algorithm !== 'takd') return trainOnce(options);
  let summary: RunSummary | undefined;
  const stages = takdStages(config);
  for (const [i, stage] of stages.entries()) {
    log(`takd: stage ${i + 1}/${stages.length}: ${stage.teachers.map((t) => t.name).join(' + ')} -> ${stage.members[0].name}`);
    summary = await trainOnce({ ...options, config: stage });
  }
  return summary!;
}

async function trainOnce(options: LaunchOptions): Promise<RunSummary> {
  const { config } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  const children = new Map<string, ChildProcess>();
  const abort = new AbortController();
  let finished = false;
  const start = (endpoint: string) => {
    for (const worker of [...config.members, ...config.teachers]) {
      const args = [...process.execArgv, process.argv[1], 'worker', '--connect', endpoint, '--member', worker.name];
      if (options.backend) args.push('--backend', options.backend);
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
      children.set(worker.name, child);
      relay(child, worker.name, log);
      child.on('exit', (code, signal) => {
        children.delete(worker.name);
        if (!finished && (code !== 0 || signal)) abort.abort(new CohortError(`worker ${worker.name} exited with ${signal ?? `code ${code}`} before the run was complete`));
      });
    }
  };
  try {
    return await runCoordinator({ config, bind: 'tcp://127.0.0.1:*', logEvery: options.logEvery, onListening: start, signal: abort.signal, log });
  } finally {
    finished = true;
    await Promise.all(
      [...children.values()].map(
        (child) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
            child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            if (child.exitCode !== null || child.signalCode !== null) resolve();
          }),
      ),
    );
  }
}

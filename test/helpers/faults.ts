/**
 * Fault injection for the tests: `cohort train` run as a child process whose output lines can
 * trigger kills, and a trigger that SIGKILLs a named worker once the coordinator reports a step.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ROOT } from './cli.js';

export interface Run {
  code: number | null;
  output: string;
}

/** `cohort train ARGS --log-every 1` as a child process (with extra environment variables: failpoints); `onLine` sees every output line (and may kill workers). */
export function train(args: string[], onLine: (line: string) => void = () => {}, options: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env, ...options.env };
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', 'train', ...args, '--log-every', '1'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        output += `${line}\n`;
        onLine(line);
      });
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 240_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Kills worker `name` (member or teacher) with SIGKILL once the coordinator reports step `step`, up to `times` times. */
export function killAt(name: string, step: number, times = 1): (line: string) => void {
  const pids = new Map<string, number>();
  let kills = 0;
  return (line: string) => {
    const joined = /^coordinator: (\w+) \((?:member|teacher)\) (?:re)?joined from .*, pid (\d+)/.exec(line);
    if (joined) pids.set(joined[1], Number(joined[2]));
    const reached = /^step (\d+) \|/.exec(line);
    if (reached && Number(reached[1]) === step && kills < times && pids.has(name)) {
      kills++;
      process.kill(pids.get(name)!, 'SIGKILL');
      pids.delete(name);
    }
  };
}

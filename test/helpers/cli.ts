/**
 * The one way tests (and benches) run the `cohort` CLI: its TypeScript source through tsx, as
 * a real child process. `startCli` gives the running process (its output as it streams, kill,
 * its exit as a promise); `runCli` waits for the result. `wrap` runs the same command under
 * another one (a network namespace, a terminal).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The command line that runs the CLI from the repository root. */
export function cliArgv(args: readonly string[]): string[] {
  return [process.execPath, '--import', 'tsx', 'cli.ts', ...args];
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr lines as they came. */
  output: string;
}

export interface CliOptions {
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** SIGKILL after this long (default 600 s). */
  timeoutMs?: number;
  /** Called with each line of stdout and stderr as it arrives. */
  onLine?: (line: string) => void;
  /** Runs the CLI's command line under another program: returns that program and its arguments. */
  wrap?: (argv: string[]) => [string, string[]];
  /** 'ignore': the process's output is not read (default 'pipe'). */
  output?: 'pipe' | 'ignore';
}

export interface CliProcess {
  child: ChildProcess;
  pid: number | undefined;
  /** Settles once the process has exited and its output is read. */
  exited: Promise<CliResult>;
  /** The output so far. */
  output(): string;
  /** Signals the process if it still runs (default SIGKILL). */
  kill(signal?: NodeJS.Signals): void;
}

export function startCli(args: readonly string[], options: CliOptions = {}): CliProcess {
  const argv = cliArgv(args);
  const [command, commandArgs] = options.wrap ? options.wrap(argv) : [argv[0], argv.slice(1)];
  const child = spawn(command, commandArgs, { cwd: ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', options.output ?? 'pipe', options.output ?? 'pipe'] });
  let stdout = '';
  let stderr = '';
  let output = '';
  const streams: Promise<void>[] = [];
  if (child.stdout && child.stderr) {
    for (const [stream, add] of [
      [child.stdout, (d: string) => (stdout += d)],
      [child.stderr, (d: string) => (stderr += d)],
    ] as const) {
      stream.setEncoding('utf8');
      stream.on('data', add);
      const lines = createInterface({ input: stream });
      lines.on('line', (line) => {
        output += `${line}\n`;
        options.onLine?.(line);
      });
      streams.push(new Promise((resolve) => lines.once('close', () => resolve())));
    }
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 600_000);
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      void Promise.all(streams).then(() => resolve({ code, signal, stdout, stderr, output }));
    });
  });
  const kill = (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  return { child, pid: child.pid, exited, output: () => output, kill };
}

/** Runs `cohort ARGS` to its end. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 600_000): Promise<CliResult> {
  return startCli(args, { env, timeoutMs }).exited;
}

/**
 * `cohort launch CONFIG --hosts h1,h2 --gpus-per-host N` for clusters without Kubernetes or
 * Slurm: the coordinator runs in this process, listening on an address the hosts can reach,
 * and every member and teacher of the config is given a host:GPU slot in order (the first
 * host's GPUs first) and started there with the system `ssh` (BatchMode: keys, no prompts):
 * `ssh HOST sh -c '... cohort worker --connect tcp://ADVERTISE:PORT --member NAME --gpu N --keys DIR'`.
 * The run gets its own CURVE keys (RUN/keys, reused on --resume); the worker's key pair and the
 * coordinator's public key travel on ssh's standard input into a private temporary folder on
 * the host, removed when the worker exits (or read from RUN/keys with `sharedKeys`, when the
 * hosts see the run directory at the same path). Standard input stays open as a lifeline: when
 * this process or its ssh dies, the remote side sees end-of-file and stops the worker (TERM,
 * then KILL after 5 s), so no worker outlives its launcher. Output is relayed line by line with
 * the worker's name in front. A worker whose ssh exits non-zero (the worker failed, or ssh could
 * not connect: exit 255) is reported to the coordinator like a dead local worker, and the
 * recovery policy applies (restarted over ssh after the backoff, or the run stops).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { requireOneRun } from '../shared/algorithms/registry.js';
import { runDirectory, type RunConfig } from '../shared/config/run-config.js';
import { CohortError } from '../shared/errors.js';
import { runKeys } from '../shared/protocol/curve.js';
import { createProgressDisplay } from './progress-display.js';
import { runCoordinator, type RunSummary } from './run-coordinator.js';
import { endAfter, WorkerProcesses, type WorkerProcess } from './worker-processes.js';

/** Where one member or teacher runs. */
export interface Slot {
  worker: string;
  role: 'member' | 'teacher';
  host: string;
  gpu: number;
}

export interface SshLaunchOptions {
  config: RunConfig;
  /** ssh destinations, `host` or `user@host`, each listed once. */
  hosts: string[];
  gpusPerHost: number;
  /** Address the coordinator listens on (default 0.0.0.0: every interface). */
  listen?: string;
  /** Port (default 5555; 0: any free port). */
  port?: number;
  /** Host name or address the workers connect to (default: this machine's host name). */
  advertise?: string;
  /** The command that runs cohort on the hosts, words separated by spaces (default `cohort`). */
  remoteCohort?: string;
  /** The hosts read the keys from RUN/keys at the same path (shared storage) instead of receiving a copy. */
  sharedKeys?: boolean;
  /** Extra ssh options, each passed as `-o OPTION` (e.g. `Port=2222`, `IdentityFile=~/.ssh/cluster`). */
  sshOptions?: string[];
  /** The ssh program (default `ssh` on the PATH). */
  ssh?: string;
  /** Overrides every worker's backend. */
  backend?: string;
  resume?: boolean;
  logEvery?: number;
  interactive?: boolean;
  /** Called with every ssh process started. */
  onSpawn?: (name: string, child: ChildProcess, slot: Slot) => void;
  /** Aborting asks for a graceful stop (coordinator/stop.ts): a checkpoint at the next step barrier, then every worker exits. */
  stopRequest?: AbortSignal;
  /** Aborting stops at once: every worker's lifeline is ended (its host stops it), no checkpoint. */
  signal?: AbortSignal;
  log?: (line: string) => void;
}

const HOST = /^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$/;

/** `host1,host2` -> ['host1', 'host2']; each a plain host name, address or user@host, listed once. */
export function parseHosts(text: string): string[] {
  if (text.trim() === '') throw new CohortError('--hosts is empty: list the ssh hosts, comma-separated, e.g. --hosts node1,node2', { code: 'USAGE' });
  const hosts = text.split(',').map((h) => h.trim());
  const seen = new Set<string>();
  hosts.forEach((host, i) => {
    if (host === '') throw new CohortError(`--hosts '${text}': entry ${i + 1} is empty (comma-separated host names, e.g. node1,node2)`, { code: 'USAGE' });
    if (!HOST.test(host)) throw new CohortError(`--hosts: '${host}' is not a host name, address or user@host`, { code: 'USAGE' });
    if (seen.has(host)) throw new CohortError(`--hosts: '${host}' is listed twice; list each host once and set --gpus-per-host`, { code: 'USAGE' });
    seen.add(host);
  });
  return hosts;
}

/**
 * The config's members, then its teachers, on host:GPU slots in order: worker i goes to host
 * floor(i / gpusPerHost), GPU i mod gpusPerHost.
 */
export function assignSlots(config: Pick<RunConfig, 'members' | 'teachers'>, hosts: string[], gpusPerHost: number): Slot[] {
  if (!Number.isInteger(gpusPerHost) || gpusPerHost <= 0) throw new CohortError(`--gpus-per-host must be a positive integer, got '${String(gpusPerHost)}'`, { code: 'USAGE' });
  if (hosts.length === 0) throw new CohortError('--hosts names no host', { code: 'USAGE' });
  const workers = [...config.members.map((m) => ({ name: m.name, role: 'member' as const })), ...config.teachers.map((t) => ({ name: t.name, role: 'teacher' as const }))];
  const slots = hosts.length * gpusPerHost;
  if (workers.length > slots) {
    throw new CohortError(
      `the config has ${workers.length} workers (${workers.map((w) => w.name).join(', ')}) but ${hosts.length} host${hosts.length > 1 ? 's' : ''} x ${gpusPerHost} GPU${gpusPerHost > 1 ? 's' : ''} give ${slots} slot${slots > 1 ? 's' : ''}: add hosts or raise --gpus-per-host`,
      { code: 'USAGE' },
    );
  }
  return workers.map((w, i) => ({ worker: w.name, role: w.role, host: hosts[Math.floor(i / gpusPerHost)], gpu: i % gpusPerHost }));
}

/** Quotes a word for a POSIX shell. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_/.:,=+@%-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The words of --remote-cohort (program and arguments; no shell syntax). */
export function remoteCohortWords(command: string): string[] {
  const words = command.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0)
    throw new CohortError('--remote-cohort is empty: name the command that runs cohort on the hosts, e.g. cohort or "node /opt/cohort/dist/cli.js"', { code: 'USAGE' });
  const bad = words.find((w) => /[;&|<>`$(){}'"\\]/.test(w));
  if (bad) throw new CohortError(`--remote-cohort: '${bad}' holds shell syntax; give a program and its arguments only, e.g. "node /opt/cohort/dist/cli.js"`, { code: 'USAGE' });
  return words;
}

export interface RemoteCommand {
  /** Runs the worker on the host (one line of POSIX sh, for `ssh HOST COMMAND`). */
  command: string;
  /** What to write on ssh's standard input first (the keys), or '' with shared keys. */
  stdin: string;
}

/**
 * The remote side of one worker: keys from standard input into a private temporary folder (or
 * the shared keys folder), the worker in the background, its pid on stderr, a lifeline on
 * standard input that stops it when ssh goes away, and the worker's exit code as ssh's.
 */
export function remoteWorkerCommand(args: { remoteCohort: string[]; workerArgs: string[]; keysDir: string; sharedKeys: boolean; cwd: string }): RemoteCommand {
  const worker = [...args.remoteCohort, 'worker', ...args.workerArgs].map(shellQuote).join(' ');
  const keys = args.sharedKeys ? shellQuote(args.keysDir) : '"$d"';
  const lines = [
    'umask 077',
    `cd ${shellQuote(args.cwd)} 2>/dev/null || echo "cohort launch: ${args.cwd.replace(/["\\$`]/g, '')} does not exist on $(hostname); relative paths resolve from $HOME" >&2`,
    ...(args.sharedKeys
      ? []
      : [
          'd=$(mktemp -d "${TMPDIR:-/tmp}/cohort-keys.XXXXXX") || exit 1',
          `trap 'rm -rf "$d"' EXIT`,
          `{ IFS= read -r k && IFS= read -r p; } || { echo "cohort launch: no keys on standard input" >&2; exit 1; }`,
          `printf '%s\\n' "$k" > "$d/worker.key"`,
          `printf '%s\\n' "$p" > "$d/coordinator.pub"`,
        ]),
    'exec 3<&0',
    `${worker} --keys ${keys} </dev/null 3<&- &`,
    'pid=$!',
    'echo "cohort launch: worker pid $pid on $(hostname)" >&2',
    // The lifeline: standard input ends when ssh (or the launcher) goes away.
    '( cat <&3 >/dev/null 2>&1; kill -TERM $pid 2>/dev/null; sleep 5; kill -KILL $pid 2>/dev/null ) </dev/null >/dev/null 2>&1 &',
    'lifeline=$!',
    // From here the shell writes nothing (a closed ssh channel would kill it with SIGPIPE before
    // it removes the keys; dash reports a signalled job on stderr); a signal still removes them.
    'exec 3<&- >/dev/null 2>&1',
    "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
    'wait $pid',
    'rc=$?',
    // The worker is gone: stop the lifeline, so that it never signals a reused pid.
    'kill $lifeline 2>/dev/null',
    'exit $rc',
  ];
  const stdin = args.sharedKeys
    ? ''
    : (() => {
        const pair = JSON.parse(readFileSync(join(args.keysDir, 'worker.key'), 'utf8')) as unknown;
        return `${JSON.stringify(pair)}\n${readFileSync(join(args.keysDir, 'coordinator.pub'), 'utf8').trim()}\n`;
      })();
  // One line: `;` between commands, none after a `&`.
  const script = lines.map((l, i) => (i === lines.length - 1 ? l : l.endsWith('&') ? `${l} ` : `${l}; `)).join('');
  return { command: `sh -c ${shellQuote(script)}`, stdin };
}

/** ssh's arguments for one command on `host`: BatchMode first (it cannot be turned off), then the user's options, then keep-alives. */
export function sshArgs(host: string, command: string, sshOptions: string[] = []): string[] {
  const user = sshOptions.flatMap((o) => ['-o', o]);
  return ['-T', '-x', '-o', 'BatchMode=yes', ...user, '-o', 'ConnectTimeout=15', '-o', 'ServerAliveInterval=10', '-o', 'ServerAliveCountMax=3', '--', host, command];
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

function runSsh(ssh: string, args: string[], timeoutMs: number): Promise<Finished> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(ssh, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: timeoutMs });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (error: NodeJS.ErrnoException) => reject(sshMissing(ssh, error)));
    child.on('close', (code, signal) => resolvePromise({ code, signal, stderr }));
  });
}

function sshMissing(ssh: string, error: NodeJS.ErrnoException): CohortError {
  return new CohortError(
    error.code === 'ENOENT' ? `cannot run '${ssh}': not found; cohort launch needs an ssh client (apt-get install openssh-client)` : `cannot run '${ssh}': ${error.message}`,
    { code: 'SSH_FAILED', cause: error },
  );
}

const lastLine = (text: string) => text.trim().split('\n').filter(Boolean).pop() ?? '';

/** Checks, before anything starts, that every host runs commands over ssh without a prompt and has the remote cohort command. */
export async function preflight(hosts: string[], remoteCohort: string[], options: { ssh?: string; sshOptions?: string[] } = {}): Promise<void> {
  const ssh = options.ssh ?? 'ssh';
  const program = remoteCohort[0];
  const check = `sh -c ${shellQuote(`command -v ${shellQuote(program)} >/dev/null 2>&1 || { echo "${program} not found" >&2; exit 127; }`)}`;
  const results = await Promise.all(hosts.map((host) => runSsh(ssh, sshArgs(host, check, options.sshOptions), 60_000)));
  const problems = results.flatMap((r, i) => {
    if (r.code === 0) return [];
    const host = hosts[i];
    if (r.code === 127) return [`${host}: '${program}' is not on the remote PATH (install cohort there, or pass --remote-cohort "node /path/to/cohort/dist/cli.js")`];
    const why = lastLine(r.stderr) || (r.signal ? `killed by ${r.signal} (timed out?)` : `exit ${r.code}`);
    return [`${host}: ssh failed: ${why}`];
  });
  if (problems.length > 0) {
    throw new CohortError(`cannot start workers over ssh (BatchMode: key-based login, no prompts): ${problems.join('; ')}`, { code: 'SSH_FAILED' });
  }
}

export async function launchOverSsh(options: SshLaunchOptions): Promise<RunSummary> {
  requireOneRun(options.config, 'launch each stage as its own STAGE config');
  // Workers write checkpoints and final weights under the run directory: the same absolute path everywhere.
  const config: RunConfig = { ...options.config, runDir: resolve(options.config.runDir) };
  const slots = assignSlots(config, options.hosts, options.gpusPerHost);
  const port = options.port ?? 5555;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new CohortError(`--port must be a port number (0-65535; 0: any free port), got '${String(port)}'`, { code: 'USAGE' });
  const listen = options.listen ?? '0.0.0.0';
  const advertise = options.advertise ?? hostname();
  const remoteCohort = remoteCohortWords(options.remoteCohort ?? 'cohort');
  const ssh = options.ssh ?? 'ssh';
  const sshOptions = options.sshOptions ?? [];
  const sharedKeys = options.sharedKeys ?? false;
  const baseLog = options.log ?? ((line: string) => console.log(line));

  await preflight([...new Set(slots.map((s) => s.host))], remoteCohort, { ssh, sshOptions });

  const display = createProgressDisplay({ workers: slots.map((s) => s.worker), epochs: config.epochs, log: baseLog, interactive: options.interactive });
  const log = (line: string) => display.log(line);
  const keysDir = join(runDirectory(config), 'keys');
  const curve = runKeys(keysDir);
  const abort = new AbortController();
  const slotOf = new Map(slots.map((slot) => [slot.worker, slot]));
  let endpoint = '';
  const workers = new WorkerProcesses({
    recovery: config.recovery,
    log,
    start: (name) => {
      const slot = slotOf.get(name)!;
      const workerArgs = ['--connect', endpoint, '--member', name, '--gpu', String(slot.gpu), ...(options.backend ? ['--backend', options.backend] : [])];
      const remote = remoteWorkerCommand({ remoteCohort, workerArgs, keysDir, sharedKeys, cwd: process.cwd() });
      const child = spawn(ssh, sshArgs(slot.host, remote.command, sshOptions), { stdio: ['pipe', 'pipe', 'pipe'] });
      const worker: WorkerProcess = { child, host: slot.host };
      log(`launcher: ${name} -> ${slot.host} GPU ${slot.gpu} (ssh)`);
      child.stdin!.on('error', () => {}); // ssh gone: its exit is reported by WorkerProcesses
      child.stdin!.write(remote.stdin);
      options.onSpawn?.(name, child, slot);
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({ input: stream }).on('line', (line) => {
          const pid = /^cohort launch: worker pid (\d+) on /.exec(line);
          if (pid) worker.remotePid = Number(pid[1]);
          log(`[${name}] ${line}`);
        });
      }
      child.on('error', (error: NodeJS.ErrnoException) => abort.abort(sshMissing(ssh, error)));
      return worker;
    },
    describeExit: (name, code, signal) => {
      const { host } = slotOf.get(name)!;
      if (code === 255) return `ssh to ${host} failed (exit 255: connection, authentication, or the session was cut)`;
      return signal ? `its ssh to ${host} was killed by ${signal}` : `it exited with code ${code} on ${host} (through ssh)`;
    },
    where: (name) => ` on ${slotOf.get(name)!.host} GPU ${slotOf.get(name)!.gpu}`,
  });

  let failed = false;
  try {
    return await runCoordinator({
      config,
      bind: `tcp://${listen}:${port === 0 ? '*' : port}`,
      logEvery: options.logEvery,
      display,
      resume: options.resume,
      curve,
      signal: options.signal ? AbortSignal.any([abort.signal, options.signal]) : abort.signal,
      ...(options.stopRequest ? { stopRequest: options.stopRequest } : {}),
      onControl: (control) => workers.attach(control),
      // A hung worker: its ssh session ended; the lifeline stops it on the host, and the exit starts the replacement.
      onWorkerLost: (name, pid) =>
        workers.stopLost(name, pid, ({ child }) => {
          child.stdin?.end();
          child.kill('SIGTERM');
        }),
      onListening: (bound) => {
        const boundPort = /:(\d+)$/.exec(bound)?.[1];
        if (!boundPort) throw new CohortError(`cannot tell the port of ${bound}`, { code: 'INTERNAL' });
        endpoint = `tcp://${advertise.includes(':') && !advertise.startsWith('[') ? `[${advertise}]` : advertise}:${boundPort}`;
        log(`launcher: workers connect to ${endpoint}`);
        for (const slot of slots) workers.start(slot.worker);
      },
      log,
    });
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    // Finished workers exit on their own; after a failed run, or past 10 s, the lifeline stops
    // them (TERM, KILL 5 s later), and ssh is killed 10 s after that.
    const grace = failed ? 0 : 10_000;
    await workers.settle((worker, exited) => endAfter(worker, exited, { closeInput: grace, kill: grace + 10_000 }));
  }
}

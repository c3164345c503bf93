/**
 * The worker processes of one run, as a launcher keeps them (`cohort train` locally, `cohort
 * launch` over ssh): each started by the launcher's own `start`, its exit before the run's end
 * reported to the coordinator as a loss, and (under `restart` and `elastic`) started again after
 * a backoff that doubles with each restart of that worker; the coordinator enforces maxRestarts
 * and stops the run beyond it. A process the coordinator declared lost (hung) is stopped here and
 * its exit is not reported again. When the run ends, `settle` waits for every process to exit.
 */
import type { ChildProcess } from 'node:child_process';
import type { RunConfig } from '../shared/config/run-config.js';
import type { CoordinatorControl } from './run-coordinator.js';
import { EXIT_STOPPED } from './stop.js';

/** One started worker: its process here (the worker itself, or its ssh) and, when known, the worker's pid on its host. */
export interface WorkerProcess {
  child: ChildProcess;
  remotePid?: number;
  /** The host it runs on (for the run's records; absent for this machine). */
  host?: string;
}

export interface WorkerProcessesOptions {
  recovery: RunConfig['recovery'];
  log: (line: string) => void;
  /** Starts worker `name` (its output relayed, its standard input its lifeline). */
  start: (name: string) => WorkerProcess;
  /** Why a process that ended before the run did ended, in words for the coordinator's loss. */
  describeExit: (name: string, code: number | null, signal: NodeJS.Signals | null) => string;
  /** Where a restart goes, for the log line (e.g. ` on node2 GPU 1`; default nothing). */
  where?: (name: string) => string;
}

export class WorkerProcesses {
  private readonly processes = new Map<string, WorkerProcess>();
  private readonly restartsOf = new Map<string, number>();
  /** Processes the coordinator has already declared lost (hung): their exit is not reported again. */
  private readonly declaredLost = new WeakSet<ChildProcess>();
  private control: CoordinatorControl | undefined;
  private finished = false;

  constructor(private readonly options: WorkerProcessesOptions) {}

  /** The coordinator's control (losses, starts, stops go to the run's records through it). */
  attach(control: CoordinatorControl): void {
    this.control = control;
  }

  /** Starts worker `name` (a restart: `delayMs` after its last exit). */
  start(name: string, delayMs = 0): void {
    const worker = this.options.start(name);
    const { child } = worker;
    this.processes.set(name, worker);
    if (child.pid) this.control?.started(name, child.pid, this.restartsOf.get(name) ?? 0, delayMs, worker.host);
    child.on('exit', (code, signal) => this.exited(name, child, code, signal));
  }

  private exited(name: string, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.processes.get(name)?.child === child) this.processes.delete(name);
    child.stdin?.destroy();
    // EXIT_STOPPED: the coordinator stopped the run gracefully and shut the worker down.
    if (this.finished || ((code === 0 || code === EXIT_STOPPED) && !signal)) return;
    if (!this.declaredLost.has(child)) this.control?.lost(name, this.options.describeExit(name, code, signal));
    if (this.options.recovery.policy === 'fail') return;
    const k = this.restartsOf.get(name) ?? 0;
    this.restartsOf.set(name, k + 1);
    const delay = this.options.recovery.backoffMs * 2 ** k;
    this.options.log(`launcher: restarting ${name}${this.options.where?.(name) ?? ''} in ${delay} ms`);
    setTimeout(() => {
      if (!this.finished) this.start(name, delay);
    }, delay).unref();
  }

  /**
   * The coordinator declared worker `name` (pid `pid`, as the worker reported it) lost while its
   * process may still run (hung): `stop` ends it, and its exit starts the replacement. A pid that
   * is not the current process's (a replacement already started) is left alone.
   */
  stopLost(name: string, pid: number, stop: (worker: WorkerProcess) => void): void {
    const worker = this.processes.get(name);
    if (!worker) return;
    // Here the worker is the child; on another host its pid is known once it reported it.
    const own = worker.host === undefined ? worker.child.pid : worker.remotePid;
    if (own !== undefined && own !== pid) return;
    this.declaredLost.add(worker.child);
    this.options.log(`launcher: stopping ${name} (pid ${pid}${worker.host === undefined ? '' : ' on its host'}), which the coordinator declared lost`);
    this.control?.stopped(name, pid);
    stop(worker);
  }

  /** Every process still running. */
  running(): WorkerProcess[] {
    return [...this.processes.values()];
  }

  /** The run is over: no more restarts; resolves once every process has exited, `end` ending each that has not. */
  async settle(end: (worker: WorkerProcess, exited: Promise<void>) => void): Promise<void> {
    this.finished = true;
    await Promise.all(
      this.running().map((worker) => {
        const { child } = worker;
        if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        end(worker, exited);
        return exited;
      }),
    );
  }
}

/** Ends a process that does not exit in time: its standard input (its lifeline) closed after `closeInput` ms when given, SIGKILL after `kill` ms. */
export function endAfter(worker: WorkerProcess, exited: Promise<void>, afterMs: { closeInput?: number; kill: number }): void {
  const timers = [
    ...(afterMs.closeInput === undefined ? [] : [setTimeout(() => worker.child.stdin?.end(), afterMs.closeInput)]),
    setTimeout(() => worker.child.kill('SIGKILL'), afterMs.kill),
  ];
  void exited.then(() => timers.forEach(clearTimeout));
}

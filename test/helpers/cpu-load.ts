/**
 * A CPU made busy on purpose: busy-loop child processes beside the cohort for a whole test (one
 * per core, at least 2), so that liveness is tested on a starved machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';

export interface CpuLoad {
  readonly processes: number;
  stop(): void;
}

/** Starts `count` busy loops (default: one per core, at least 2); `stop` kills them by pid. */
export function startCpuLoad(count = Math.max(2, availableParallelism())): CpuLoad {
  const children: ChildProcess[] = [];
  for (let i = 0; i < count; i++) {
    const child = spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' });
    child.unref();
    children.push(child);
  }
  return {
    processes: count,
    stop() {
      for (const child of children) if (child.exitCode === null && child.pid) child.kill('SIGKILL');
    },
  };
}

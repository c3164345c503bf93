/** A benchmark measured in its own process reports one JSON line on stdout; this reads it back. */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';

export type ChildJson<T> = { value: T } | { failed: string };

/**
 * Runs `command args` to its end and returns the last stdout line that starts with `{`, parsed;
 * when the process fails or prints none, `failed` says its exit status and its last few lines.
 */
export function runChildJson<T>(command: string, args: string[], options: Omit<SpawnSyncOptions, 'encoding'> = {}): ChildJson<T> {
  const child = spawnSync(command, args, { maxBuffer: 64 << 20, ...options, encoding: 'utf8' });
  const stdout = child.stdout ?? '';
  const line = stdout
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  if (child.status === 0 && line) return { value: JSON.parse(line) as T };
  const reason = (child.stderr || stdout || child.error?.message || '')
    .trim()
    .split('\n')
    .filter((l) => l.length < 400)
    .slice(-3)
    .join(' | ');
  return { failed: `failed (exit ${child.status}): ${reason}` };
}

/**
 * The streaming GC setting (shared/protocol/gc-tuning.ts) takes effect: a process that streams
 * 1 MiB ZeroMQ messages runs incremental marks by default (zeromq.js reports each received
 * message as external memory), and none once a Cohort socket has been opened. Each case runs
 * in a fresh process (test/fixtures/gc-probe.ts), since the setting is per process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const probe = fileURLToPath(new URL('./fixtures/gc-probe.ts', import.meta.url));

function gcKinds(mode: 'default' | 'tuned'): Record<string, number> {
  const child = spawnSync(process.execPath, ['--import', 'tsx', probe, mode], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(child.status, 0, child.stderr);
  const result = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { received: number; kinds: Record<string, number> };
  assert.equal(result.received, 400 * 2 ** 20, 'every message arrived whole');
  return result.kinds;
}

test('a process streaming 1 MiB messages runs incremental marks by default and none once a Cohort socket is open', () => {
  const incremental = String(constants.NODE_PERFORMANCE_GC_INCREMENTAL);
  const major = String(constants.NODE_PERFORMANCE_GC_MAJOR);
  const plain = gcKinds('default');
  assert.ok((plain[incremental] ?? 0) > 0, `expected incremental marks without the setting: ${JSON.stringify(plain)}`);
  const tuned = gcKinds('tuned');
  assert.equal(tuned[incremental] ?? 0, 0, `incremental marks with the setting: ${JSON.stringify(tuned)}`);
  assert.ok((tuned[major] ?? 0) > 0, `the external memory is still collected, by full collections: ${JSON.stringify(tuned)}`);
});

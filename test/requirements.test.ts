/**
 * Tests' system requirements (test/helpers/requirements.ts): a test whose command is missing
 * is skipped with what to install on a developer's machine, and fails under CI=true; a test
 * whose requirements are met runs. Shown on a real test file run by node's test runner.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './helpers/cli.js';
import { onPath, tool, unmet } from './helpers/requirements.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-requirements-'));
after(() => rmSync(root, { recursive: true, force: true }));

const MISSING = 'cohort-no-such-command';

test('unmet names every missing requirement with how to get it, and nothing when all are met', () => {
  assert.equal(onPath(process.execPath), true);
  assert.equal(onPath(MISSING), false);
  assert.equal(unmet(tool(process.execPath, 'nodejs')), undefined);
  assert.equal(
    unmet(tool(MISSING, 'cohort-pkg'), tool(process.execPath, 'nodejs'), tool(`/nonexistent/${MISSING}`, 'other-pkg')),
    `needs ${MISSING} (apt-get install cohort-pkg), /nonexistent/${MISSING} (apt-get install other-pkg)`,
  );
});

/** Runs a test file with one test needing a missing command and one needing node, with CI=`ci` (or unset). */
function runFixture(ci: string | undefined): { status: number | null; output: string } {
  const file = join(root, 'fixture.test.ts');
  writeFileSync(
    file,
    `import { test } from 'node:test';
import { cannotRun, tool, unmet } from ${JSON.stringify(pathToFileURL(join(ROOT, 'test/helpers/requirements.ts')).href)};
test('needs a missing command', (t) => {
  if (cannotRun(t, unmet(tool('${MISSING}', 'cohort-pkg')))) return;
  throw new Error('ran without its requirement');
});
test('needs node', (t) => {
  if (cannotRun(t, unmet(tool(${JSON.stringify(process.execPath)}, 'nodejs')))) return;
  console.log('the node test ran');
});
`,
  );
  const env = { ...process.env };
  delete env.CI;
  delete env.NODE_TEST_CONTEXT; // set by the runner of this file: the child runs its own tests
  if (ci !== undefined) env.CI = ci;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, output: r.stdout + r.stderr };
}

test('on a developer machine a test with a missing requirement is skipped, saying what to install; the others run', { timeout: 60_000 }, () => {
  const { status, output } = runFixture(undefined);
  assert.equal(status, 0, output);
  assert.match(output, new RegExp(`ok 1 - needs a missing command # SKIP needs ${MISSING} \\(apt-get install cohort-pkg\\)`));
  assert.match(output, /ok 2 - needs node\n/);
  assert.match(output, /the node test ran/);
  assert.match(output, /# skipped 1/);
});

test('under CI=true the same test fails, saying what is missing', { timeout: 60_000 }, () => {
  const { status, output } = runFixture('true');
  assert.equal(status, 1, output);
  assert.match(output, /not ok 1 - needs a missing command/);
  assert.match(output, new RegExp(`needs ${MISSING} \\(apt-get install cohort-pkg\\); under CI=true this test is required`));
  assert.match(output, /ok 2 - needs node\n/);
  assert.match(output, /# skipped 0/);
});

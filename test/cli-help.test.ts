/**
 * The command line's help and its usage errors, through the real `cohort` process: `--help` of
 * the top level and of every command exits 0 and lists that command's own options (and not
 * another command's); an unknown command, an unknown option, no command, a missing required
 * option or positional each exit 2 with one `cohort: error: ...` line on stderr that says what
 * is wrong, and never a stack trace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, type CliResult } from './helpers/cli.js';

/** Each command's own options and positionals, as cli.ts declares them. */
const COMMANDS: Record<string, { usage: string; options: string[]; positionals?: string[]; notOptions: string[] }> = {
  'train-single': {
    usage: 'cohort train-single',
    options: ['--backend', '--gpu', '--epochs', '--batch-size', '--lr', '--seed', '--train-limit', '--data-dir', '--cache-dir', '--log-every'],
    notOptions: ['--connect', '--bind', '--resume', '--insecure', '--member'],
  },
  train: {
    usage: 'cohort train <config>',
    options: ['--backend', '--resume', '--insecure', '--log-every'],
    positionals: ['config'],
    notOptions: ['--bind', '--connect', '--keys', '--epochs', '--gpu'],
  },
  coordinator: {
    usage: 'cohort coordinator <config>',
    options: ['--bind', '--resume', '--keys', '--insecure', '--log-every'],
    positionals: ['config'],
    notOptions: ['--connect', '--member', '--gpu', '--epochs'],
  },
  worker: {
    usage: 'cohort worker',
    options: ['--backend', '--gpu', '--connect', '--member', '--member-index', '--config', '--timeout', '--keys', '--insecure', '--lifeline'],
    notOptions: ['--bind', '--resume', '--log-every', '--epochs'],
  },
  launch: {
    usage: 'cohort launch <config>',
    options: ['--hosts', '--gpus-per-host', '--listen', '--port', '--advertise', '--remote-cohort', '--shared-keys', '--ssh-option', '--backend', '--resume', '--log-every'],
    positionals: ['config'],
    notOptions: ['--connect', '--bind', '--keys', '--insecure', '--member', '--gpu'],
  },
  eval: {
    usage: 'cohort eval <run-dir>',
    options: ['--backend', '--gpu', '--member'],
    positionals: ['run-dir'],
    notOptions: ['--connect', '--bind', '--keys', '--epochs', '--insecure'],
  },
  keys: {
    usage: 'cohort keys <dir>',
    options: [],
    positionals: ['dir'],
    notOptions: ['--connect', '--bind', '--backend', '--member', '--insecure'],
  },
  report: {
    usage: 'cohort report <run-dir..>',
    options: ['--out'],
    positionals: ['run-dir'],
    notOptions: ['--backend', '--gpu', '--connect', '--bind', '--member'],
  },
};

/** The option names a yargs help text lists (first column of the Options section). */
function listedOptions(help: string): string[] {
  const section = help.split(/^Options:$/m)[1] ?? '';
  return [...section.matchAll(/^ {2}(--[a-z][a-z-]*)/gm)].map((m) => m[1]);
}

function assertUsageError(r: CliResult, what: RegExp, label: string): void {
  assert.equal(r.code, 2, `${label}: exit code ${r.code}\n${r.stderr}`);
  assert.equal(r.stdout, '', `${label}: nothing on stdout`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${label}: one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^cohort: error: /, label);
  assert.match(lines[0], what, label);
  assert.doesNotMatch(r.stderr, /^\s+at |internal error|Error:/m, `${label}: no stack trace`);
  // Said once, not twice.
  assert.ok((lines[0].match(/see --help/g) ?? []).length <= 1, `${label}: ${lines[0]}`);
}

test('cohort --help lists every command and exits 0', { timeout: 60_000 }, async () => {
  const r = await runCli(['--help'], {}, 30_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^cohort <command> \[options\]/);
  const commands = r.stdout.split(/^Commands:$/m)[1]?.split(/^Options:$/m)[0] ?? '';
  const listedCommands = [...commands.matchAll(/^ {2}cohort ([a-z-]+)/gm)].map((m) => m[1]);
  assert.deepEqual(listedCommands.sort(), Object.keys(COMMANDS).sort());
  for (const [name, { usage }] of Object.entries(COMMANDS)) {
    assert.match(commands, new RegExp(`^  ${usage.replace(/[<>-]/g, '\\$&')} +\\S`, 'm'), `top-level help lists ${name}`);
  }
  assert.deepEqual(listedOptions(r.stdout), ['--version', '--help']);
});

for (const [name, spec] of Object.entries(COMMANDS)) {
  test(`cohort ${name} --help lists its own options and exits 0`, { timeout: 60_000 }, async () => {
    const r = await runCli([name, '--help'], {}, 30_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(r.stdout.startsWith(`${spec.usage}\n`), `usage line of ${name}:\n${r.stdout}`);
    const listed = listedOptions(r.stdout);
    assert.deepEqual([...listed].sort(), ['--help', '--version', ...spec.options].sort(), `${name} --help options:\n${r.stdout}`);
    for (const other of spec.notOptions) assert.ok(!listed.includes(other), `${name} --help must not list ${other}`);
    if (spec.positionals) {
      const positionals = r.stdout.split(/^Positionals:$/m)[1]?.split(/^Options:$/m)[0] ?? '';
      for (const p of spec.positionals) assert.match(positionals, new RegExp(`^  ${p} +\\S.*\\[required\\]`, 'ms'), `${name}: positional ${p}`);
    } else {
      assert.doesNotMatch(r.stdout, /^Positionals:$/m);
    }
    // --help does nothing else: no backend started, no config read, no socket opened.
    assert.doesNotMatch(r.stdout, /^(backend: |coordinator: |keys written)/m);
  });
}

test('usage errors: one clear line naming the problem, exit 2, no stack trace', { timeout: 60_000 }, async () => {
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /Unknown argument: frobnicate/],
    [[], /name a command/],
    [['keys', '/tmp/x', '--bogus'], /Unknown argument: bogus/],
    [['worker'], /Missing required argument: connect/],
    [['worker', '--connect', 'tcp://127.0.0.1:1'], /name the worker: --member NAME, or --member-index N with --config FILE/],
    [['worker', '--member', 'a'], /Missing required argument: connect/],
    [['train'], /Not enough non-option arguments: got 0, need at least 1/],
    [['coordinator'], /Not enough non-option arguments: got 0, need at least 1/],
    [['eval'], /Not enough non-option arguments: got 0, need at least 1/],
    [['keys'], /Not enough non-option arguments: got 0, need at least 1/],
    [['launch', 'run.yaml'], /Missing required argument: hosts/],
    [['train-single', '--epochs', '0'], /--epochs must be a positive integer, got '0'/],
    [['train-single', '--backend', 'tpu'], /Invalid values:.*backend.*tpu/],
    [['worker', '--connect', 'tcp://10.1.2.3:5555', '--member', 'a', '--insecure'], /refusing --insecure on tcp:\/\/10\.1\.2\.3:5555/],
    [['worker', '--connect', 'tcp://127.0.0.1:5555', '--member', 'a'], /CURVE by default: pass --keys DIR/],
    [['train', '/nonexistent/run.yaml'], /config file not found: \/nonexistent\/run\.yaml/],
  ];
  // Three at a time: the machine is small.
  for (let i = 0; i < cases.length; i += 3) {
    const batch = cases.slice(i, i + 3);
    const results = await Promise.all(batch.map(([args]) => runCli(args, {}, 30_000)));
    batch.forEach(([args, what], k) => assertUsageError(results[k], what, `cohort ${args.join(' ')}`));
  }
});

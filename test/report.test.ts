/**
 * `cohort report` through the real process, on metrics files built here with known values (the
 * records of shared/metrics/records.ts, validated by its schema before they are written): two
 * runs overlaid and one run without step records or reliability bins. Checks the exit code and
 * output line, that the page is self-contained (no script, no link, no URL in src/href/url(), a
 * Content-Security-Policy), the final tables against hand-computed percentages, the charts and
 * 'no data' placeholders, a worker name that is markup escaped; then opens the page in headless Chromium and checks that every chart
 * rendered: its <svg> has a size, the expected number of lines, points, bars and diagonals drawn
 * with non-zero geometry and its axis titles, and a screenshot holds the workers' colours.
 * Bad input (a missing directory, a folder without metrics.jsonl, garbage lines through the CLI:
 * one `cohort: error:` line, exit 2, no report; a file, an empty file, only old-format lines, only
 * a run record, an unwritable --out in process: the CohortError naming the problem).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { metricsRecordSchema, type EvalRecord, type MetricsRecord, type ReliabilityBin, type StepRecord } from '../shared/metrics/records.js';
import { defaultOutPath, writeReport } from '../report/index.js';
import { CohortError } from '../shared/errors.js';
import { thin } from '../report/charts.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { cannotRun } from './helpers/requirements.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-report-'));
after(() => rmSync(root, { recursive: true, force: true }));

const TIME = '2026-11-30T12:00:00.000Z';

/** 10 equal bins; bins below 0.3 empty, the others `accuracy = mid + shift` (clamped). */
function bins(shift: number): ReliabilityBin[] {
  return Array.from({ length: 10 }, (_, i) => {
    const lower = i / 10;
    const upper = (i + 1) / 10;
    if (i < 3) return { lower, upper, count: 0, accuracy: null, confidence: null };
    return { lower, upper, count: 10 * i, accuracy: Math.min(1, Math.max(0, (lower + upper) / 2 + shift)), confidence: (lower + upper) / 2 };
  });
}
const NON_EMPTY_BINS = 7;

function evalRecord(worker: string, role: EvalRecord['role'], epoch: number, accuracy: number, nll: number, ece: number, reliability?: ReliabilityBin[]): EvalRecord {
  return { kind: 'eval', time: TIME, worker, role, epoch, accuracy, nll, ece, count: 10000, ...(reliability ? { reliability } : {}) };
}

function stepRecord(worker: string, role: StepRecord['role'], step: number, stepsPerEpoch: number, loss?: number): StepRecord {
  return {
    kind: 'step',
    time: TIME,
    worker,
    role,
    epoch: Math.floor(step / stepsPerEpoch),
    step,
    ...(loss === undefined ? {} : { loss, accuracy: 0.5 }),
    imagesPerSecond: 1000,
    stepMs: 100 + (step % 7) * 3 + (worker.charCodeAt(0) % 5),
    lr: 0.001,
  };
}

/** Writes RUN/metrics.jsonl: each record checked against the schema, then `extraLines` appended as is. */
function writeRun(name: string, records: MetricsRecord[], extraLines: string[] = []): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const r of records) metricsRecordSchema.parse(r);
  const lines = records.map((r) => JSON.stringify(r));
  writeFileSync(join(dir, 'metrics.jsonl'), [...lines, ...extraLines].join('\n') + '\n');
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ name }));
  return dir;
}

// Run alpha: DML, members a and b, 2 epochs of 4 steps; a step record every step.
const ALPHA_STEPS = 4;
const alpha = writeRun(
  'alpha',
  [
    {
      kind: 'run',
      time: TIME,
      run: 'dml-alpha',
      algorithm: 'dml',
      members: [
        { name: 'a', model: 'cnn' },
        { name: 'b', model: 'cnn' },
      ],
      teachers: [],
      epochs: 2,
      stepsPerEpoch: ALPHA_STEPS,
      batchSize: 64,
      startStep: 0,
    },
    ...Array.from({ length: 2 * ALPHA_STEPS }, (_, s) => [stepRecord('a', 'member', s, ALPHA_STEPS, 2 - 0.2 * s), stepRecord('b', 'member', s, ALPHA_STEPS, 2.1 - 0.2 * s)]).flat(),
    evalRecord('a', 'member', 0, 0.8, 0.5, 0.02, bins(-0.1)),
    evalRecord('b', 'member', 0, 0.79, 0.52, 0.03, bins(-0.1)),
    evalRecord('ensemble', 'ensemble', 0, 0.81, 0.48, 0.01, bins(-0.1)),
    // An evaluation later redone (a rollback): the last line for (a, epoch 1) is the one shown.
    evalRecord('a', 'member', 1, 0.5, 9, 0.5, bins(0)),
    evalRecord('a', 'member', 1, 0.8805, 0.35123, 0.0046, bins(0)),
    evalRecord('b', 'member', 1, 0.8758, 0.36789, 0.0147, bins(-0.05)),
    evalRecord('ensemble', 'ensemble', 1, 0.883, 0.33333, 0.0078, bins(0.02)),
  ],
  // An eval line of the older format (no kind) and a line that is not JSON: skipped, and said so.
  ['{"time":"2026-11-01T00:00:00Z","epoch":0,"worker":"a","role":"member","accuracy":0.7,"nll":0.8,"ece":0.02}', 'not json at all'],
);
const ALPHA_LINES = 1 + 2 * 2 * ALPHA_STEPS + 7 + 2;

// Run beta: KD, members a and b, teacher t (no loss, no reliability bins), 3 epochs of 5 steps; a step record every 2 steps.
const BETA_STEPS = 5;
const betaSteps = [1, 3, 5, 7, 9, 11, 13];
const beta = writeRun('beta', [
  {
    kind: 'run',
    time: TIME,
    run: 'kd-beta',
    algorithm: 'kd',
    members: [
      { name: 'a', model: 'mlp' },
      { name: 'b', model: 'mlp' },
    ],
    teachers: [{ name: 't', model: 'cnn' }],
    epochs: 3,
    stepsPerEpoch: BETA_STEPS,
    batchSize: 64,
    startStep: 0,
  },
  ...betaSteps.flatMap((s) => [
    stepRecord('t', 'teacher', s, BETA_STEPS),
    stepRecord('a', 'member', s, BETA_STEPS, 1.5 - 0.1 * s),
    stepRecord('b', 'member', s, BETA_STEPS, 1.6 - 0.1 * s),
  ]),
  ...[0, 1, 2].flatMap((e) => [
    evalRecord('a', 'member', e, [0.85, 0.89, 0.9012][e], [0.4, 0.3, 0.28][e], [0.03, 0.025, 0.0213][e], bins(0.05)),
    evalRecord('b', 'member', e, [0.84, 0.88, 0.8999][e], [0.41, 0.32, 0.3001][e], [0.02, 0.015, 0.01][e], bins(0.03)),
    evalRecord('t', 'teacher', e, 0.9234, 0.2222, 0.0321),
    evalRecord('ensemble', 'ensemble', e, [0.86, 0.9, 0.91][e], [0.38, 0.27, 0.25][e], [0.02, 0.018, 0.015][e], bins(0)),
  ]),
]);

// Run gamma: evaluations only (a metrics file from before step records and reliability bins), and
// a worker name that is markup: the page must show it as text.
const SOLO = 'solo<script>alert("&")</script>';
const gamma = writeRun('gamma', [
  { kind: 'run', time: TIME, run: 'baseline-gamma', algorithm: 'baseline', members: [{ name: SOLO, model: 'cnn' }], teachers: [], epochs: 2, batchSize: 64, startStep: 0 },
  evalRecord(SOLO, 'member', 0, 0.7, 0.9, 0.05),
  evalRecord(SOLO, 'member', 1, 0.75, 0.8, 0.04),
]);

/** The hand-computed final tables: worker, role, epoch, accuracy %, NLL (4 decimals), ECE %. */
const EXPECTED_TABLES: Record<string, string[][]> = {
  'dml-alpha': [
    ['a', 'member', '2', '88.05%', '0.3512', '0.46%'],
    ['b', 'member', '2', '87.58%', '0.3679', '1.47%'],
    ['ensemble', 'ensemble', '2', '88.30%', '0.3333', '0.78%'],
  ],
  'kd-beta': [
    ['a', 'member', '3', '90.12%', '0.2800', '2.13%'],
    ['b', 'member', '3', '89.99%', '0.3001', '1.00%'],
    ['t', 'teacher', '3', '92.34%', '0.2222', '3.21%'],
    ['ensemble', 'ensemble', '3', '91.00%', '0.2500', '1.50%'],
  ],
  'baseline-gamma': [[SOLO, 'member', '2', '75.00%', '0.8000', '4.00%']],
};

const CHART_IDS = ['accuracy', 'test-loss', 'ece', 'train-loss', 'step-time', 'reliability'];

const unescape = (s: string) =>
  s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');

function finalTables(html: string): Record<string, string[][]> {
  const tables: Record<string, string[][]> = {};
  for (const m of html.matchAll(/<table class="final" data-run="([^"]*)">(.*?)<\/table>/gs)) {
    const body = m[2].split('<tbody>')[1] ?? '';
    tables[unescape(m[1])] = [...body.matchAll(/<tr>(.*?)<\/tr>/gs)].map((row) => [...row[1].matchAll(/<td[^>]*>(.*?)<\/td>/gs)].map((c) => unescape(c[1])));
  }
  return tables;
}

/** The figures of the page: chart id, whether it holds an <svg>, its 'no data' text. */
function figures(html: string): { id: string; svg: boolean; noData?: string }[] {
  return [...html.matchAll(/<figure class="chart[^"]*" data-chart="([^"]*)">(.*?)<\/figure>/gs)].map((m) => {
    const noData = /<p class="no-data">(.*?)<\/p>/s.exec(m[2])?.[1];
    return { id: m[1], svg: /<svg[\s>]/.test(m[2]), ...(noData ? { noData: unescape(noData) } : {}) };
  });
}

function assertSelfContained(html: string): void {
  const absent = (re: RegExp, what: string) => assert.ok(!re.test(html), `${what}: found ${re.exec(html)?.[0]}`);
  absent(/<script/i, 'no script at all');
  absent(/<link/i, 'no linked stylesheet or icon');
  absent(/<(img|iframe|object|embed|image|use|video|audio|source)\b/i, 'no embedded documents, images or media');
  absent(/\b(src|srcset|action|formaction)\s*=/i, 'no src attributes at all');
  absent(/\bhref\s*=\s*["']?(?!#)/i, 'no href other than to an element of the page');
  absent(/url\s*\(\s*["']?(?!#)/i, 'no url() other than to an element of the page');
  absent(/@import/i, 'no @import');
  assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">/);
  // Any URL left in the page is an XML namespace name, never something loaded.
  for (const m of html.matchAll(/https?:\/\/[^\s"'<>]*/g)) assert.match(m[0], /^http:\/\/www\.w3\.org\/(2000\/svg|1999\/xlink)$/, `unexpected URL ${m[0]}`);
  // Ids are unique across the inlined SVGs, and every local reference names one of them.
  const ids = [...html.matchAll(/\sid="([^"]*)"/g)].map((m) => m[1]);
  assert.equal(new Set(ids).size, ids.length, 'element ids are unique across the inlined SVGs');
  for (const m of html.matchAll(/url\(#([^)]+)\)/g)) assert.ok(ids.includes(m[1]), `url(#${m[1]}) names an element of the page`);
}

function assertCliError(r: CliResult, what: RegExp, label: string): void {
  assert.equal(r.code, 2, `${label}: exit code ${r.code}\n${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${label}: one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^cohort: error: /, label);
  assert.match(lines[0], what, label);
  assert.doesNotMatch(r.stderr, /^\s+at |internal error/m, `${label}: no stack trace`);
  assert.equal(r.stdout, '', `${label}: nothing written on stdout`);
}

const both = join(root, 'out', 'both.html');
let overlaid: Promise<CliResult> | undefined;
/** `cohort report alpha beta --out both.html`, run once for the tests that need it. */
function overlaidReport(): Promise<CliResult> {
  if (!overlaid) {
    mkdirSync(join(root, 'out'), { recursive: true });
    overlaid = runCli(['report', alpha, beta, '--out', both], {}, 100_000);
  }
  return overlaid;
}

test('cohort report overlays two runs into one self-contained page with the final tables and six charts', { timeout: 120_000 }, async () => {
  const r = await overlaidReport();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.trim(), new RegExp(`^report written to ${both.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(6 charts, \\d+ KiB\\)$`));
  // The skipped lines of alpha, counted, with the first problem; beta had none.
  const warnings = r.stderr.trim().split('\n');
  assert.equal(warnings.length, 1, r.stderr);
  assert.match(
    warnings[0],
    new RegExp(
      `^cohort: warning: ${join(alpha, 'metrics.jsonl')} \\(run dml-alpha\\): skipped 2 of ${ALPHA_LINES} lines that are not metrics records \\(first: line ${ALPHA_LINES - 1}: kind: .*eval lines written before metrics records had a kind are not read\\)$`,
    ),
  );

  const html = readFileSync(both, 'utf8');
  assertSelfContained(html);
  assert.match(html, /<title>Cohort report: dml-alpha, kd-beta<\/title>/);
  assert.match(html, /dml-alpha \(<code>[^<]*alpha\/metrics.jsonl<\/code>\): skipped 2 of \d+ lines/, 'the page says what was skipped');
  assert.deepEqual(finalTables(html), { 'dml-alpha': EXPECTED_TABLES['dml-alpha'], 'kd-beta': EXPECTED_TABLES['kd-beta'] });
  const figs = figures(html);
  assert.deepEqual(
    figs.map((f) => f.id),
    CHART_IDS,
  );
  assert.ok(
    figs.every((f) => f.svg && !f.noData),
    JSON.stringify(figs),
  );
  assert.equal((html.match(/<svg[\s>]/g) ?? []).length, 6, 'one <svg> per chart');
  // Both runs are in the legends (stroke dash per run) and every panel of the reliability diagrams is named.
  for (const label of ['dml-alpha', 'kd-beta', 'ensemble']) assert.match(html, new RegExp(`>${label}</text>`));
  for (const panel of ['dml-alpha/a (epoch 2)', 'dml-alpha/ensemble (epoch 2)', 'kd-beta/b (epoch 3)', 'kd-beta/ensemble (epoch 3)'])
    assert.ok(html.includes(`>${panel}</text>`), panel);
  assert.ok(!html.includes('kd-beta/t (epoch'), 'the teacher has no reliability bins: no panel');
});

test('one run: the report goes into the run directory, and charts without data say so', { timeout: 60_000 }, async () => {
  const r = await runCli(['report', gamma], {}, 50_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const out = join(gamma, 'report.html');
  assert.match(r.stdout.trim(), new RegExp(`^report written to ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(3 charts, 3 without data, \\d+ KiB\\)$`));
  const html = readFileSync(out, 'utf8');
  assertSelfContained(html);
  assert.deepEqual(finalTables(html), { 'baseline-gamma': EXPECTED_TABLES['baseline-gamma'] });
  assert.ok(html.includes('>solo&lt;script&gt;alert("&amp;")&lt;/script&gt;</text>'), 'the worker name is text in the legend');
  assert.deepEqual(
    figures(html).map((f) => [f.id, f.svg, f.noData ?? '']),
    [
      ['accuracy', true, ''],
      ['test-loss', true, ''],
      ['ece', true, ''],
      ['train-loss', false, 'no data: no step records with a loss'],
      ['step-time', false, 'no data: no step records'],
      ['reliability', false, 'no data: the last eval records hold no reliability bins'],
    ],
  );
});

test('the default output for several runs is report.html in the current folder; long series are thinned evenly', () => {
  assert.equal(defaultOutPath(['x']), join('x', 'report.html'));
  assert.equal(defaultOutPath(['x', 'y']), resolve('report.html'));
  const kept = thin(
    Array.from({ length: 10_001 }, (_, i) => i),
    2000,
  );
  assert.equal(kept.length, 2000);
  assert.equal(kept[0], 0);
  assert.equal(kept.at(-1), 10_000);
  assert.ok(kept.every((v, i) => i === 0 || v > kept[i - 1]));
});

/** Chromium from CHROMIUM, else Debian's `chromium` on the PATH; undefined when there is none. */
function chromium(): string | undefined {
  const candidates = [process.env.CHROMIUM, 'chromium', 'chromium-browser'].filter((c): c is string => !!c);
  return candidates.find((c) => spawnSync(c, ['--version'], { encoding: 'utf8', timeout: 30_000 }).status === 0);
}

function runChromium(bin: string, args: string[]): string {
  const profile = mkdtempSync(join(root, 'chromium-profile-'));
  const r = spawnSync(
    bin,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--hide-scrollbars',
      `--user-data-dir=${profile}`,
      ...args,
    ],
    { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 * 1024 * 1024 },
  );
  assert.equal(r.status, 0, `chromium ${args.join(' ')} exited ${r.status} (${r.signal ?? ''}):\n${r.stderr}`);
  return r.stdout;
}

/**
 * Measures the rendered charts in the page itself: a copy of the report with a script added
 * (the CSP allows inline scripts in this copy only, still no network) that writes, per figure,
 * the size of its <svg>, how many lines, points, bars and rules have non-zero geometry, and the
 * axis titles, into a <pre> that --dump-dom prints.
 */
const PROBE = `<script>
const drawn = (svg, sel, length) => [...svg.querySelectorAll(sel)].filter((e) => {
  if (length) return e.getTotalLength() > 1;
  const b = e.getBBox(); return b.width > 0 || b.height > 0;
}).length;
const result = [...document.querySelectorAll('figure.chart')].map((fig) => {
  const svg = fig.querySelector('svg');
  if (!svg) return { id: fig.dataset.chart, svg: false };
  const box = svg.getBoundingClientRect();
  return {
    id: fig.dataset.chart, svg: true, width: box.width, height: box.height,
    lines: drawn(svg, 'g.mark-line.role-mark > path', true),
    points: drawn(svg, 'g.mark-symbol.role-mark > path'),
    bars: drawn(svg, 'g.mark-rect.role-mark > path'),
    rules: drawn(svg, 'g.mark-rule.role-mark > line'),
    axisTitles: [...new Set([...svg.querySelectorAll('g.role-axis-title text')].map((t) => t.textContent))],
    legendTitles: [...svg.querySelectorAll('g.role-legend-title text')].map((t) => t.textContent),
    legendLabels: [...svg.querySelectorAll('g.role-legend-label text')].map((t) => t.textContent),
    strokeOf: [...svg.querySelectorAll('g.mark-line.role-mark > path')].reduce((acc, p) => {
      const worker = /worker: ([^;]*)/.exec(p.getAttribute('aria-label'))[1];
      const stroke = p.getAttribute('stroke');
      acc[worker] = acc[worker] && acc[worker] !== stroke ? 'several colours' : stroke;
      return acc;
    }, {}),
  };
});
const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(result); document.body.appendChild(pre);
</script>`;

test('headless Chromium renders every chart of the overlaid report', { timeout: 240_000 }, async (t) => {
  const bin = chromium();
  if (!bin) {
    cannotRun(t, 'needs headless Chromium to check that the report renders (apt-get install chromium, or CHROMIUM=/path/to/chromium)');
    return;
  }
  const r = await overlaidReport();
  assert.equal(r.code, 0, r.stderr);
  const html = readFileSync(both, 'utf8');
  const probePage = join(root, 'out', 'probe.html');
  writeFileSync(probePage, html.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace('</body>', `${PROBE}\n</body>`));
  const dom = runChromium(bin, ['--window-size=1400,1000', '--dump-dom', pathToFileURL(probePage).href]);
  const json = /<pre id="probe">(.*?)<\/pre>/s.exec(dom)?.[1];
  assert.ok(json, `the probe ran in Chromium; DOM starts:\n${dom.slice(0, 500)}`);
  const charts = JSON.parse(unescape(json)) as {
    id: string;
    svg: boolean;
    width: number;
    height: number;
    lines: number;
    points: number;
    bars: number;
    rules: number;
    axisTitles: string[];
    legendTitles: string[];
    legendLabels: string[];
    strokeOf: Record<string, string>;
  }[];
  assert.deepEqual(
    charts.map((c) => c.id),
    CHART_IDS,
  );
  for (const c of charts) {
    assert.ok(c.svg && c.width > 200 && c.height > 150, `${c.id}: rendered at ${c.width}x${c.height}`);
  }
  const byId = Object.fromEntries(charts.map((c) => [c.id, c]));
  // Eval charts: one line per run and worker (alpha a, b, ensemble; beta a, b, t, ensemble), a point per record.
  const evalPoints = 2 * 3 + 3 * 4;
  for (const [id, yTitle] of [
    ['accuracy', 'test accuracy'],
    ['test-loss', 'test NLL (nats)'],
    ['ece', 'test ECE'],
  ]) {
    assert.equal(byId[id].lines, 7, `${id}: lines`);
    assert.equal(byId[id].points, evalPoints, `${id}: points`);
    assert.deepEqual(byId[id].axisTitles, ['epoch', yTitle], `${id}: axis titles`);
    assert.deepEqual(byId[id].legendTitles, ['worker', 'run'], `${id}: legends`);
    assert.deepEqual(byId[id].legendLabels, ['a', 'b', 't', 'ensemble', 'dml-alpha', 'kd-beta'], `${id}: legend entries`);
  }
  // One colour per worker (for both runs' lines), the same in every chart; the legends list only the workers drawn.
  const colours = { a: '#4c78a8', b: '#f58518', t: '#e45756', ensemble: '#72b7b2' };
  for (const id of ['accuracy', 'test-loss', 'ece']) assert.deepEqual(byId[id].strokeOf, colours, `${id}: colours`);
  assert.deepEqual(byId['train-loss'].strokeOf, { a: colours.a, b: colours.b });
  assert.deepEqual(byId['train-loss'].legendLabels, ['a', 'b', 'dml-alpha', 'kd-beta']);
  assert.deepEqual(byId['step-time'].strokeOf, { a: colours.a, b: colours.b, t: colours.t });
  assert.deepEqual(byId['step-time'].legendLabels, ['a', 'b', 't', 'dml-alpha', 'kd-beta']);
  // Training loss: members only (2 per run); step time: every worker with step records (2 + 3).
  assert.equal(byId['train-loss'].lines, 4);
  assert.deepEqual(byId['train-loss'].axisTitles, ['step', 'training loss']);
  assert.equal(byId['step-time'].lines, 5);
  assert.deepEqual(byId['step-time'].axisTitles, ['step', 'ms per step']);
  // Reliability: 6 panels (alpha a, b, ensemble; beta a, b, ensemble), a bar per non-empty bin, a diagonal segment per bin.
  assert.equal(byId.reliability.bars, 6 * NON_EMPTY_BINS);
  assert.equal(byId.reliability.rules, 6 * 10);
  assert.deepEqual(byId.reliability.axisTitles, ['confidence', 'accuracy']);

  // The page as a person sees it (the report itself, CSP and all): not blank, and in the workers' colours.
  const shot = join(root, 'out', 'shot.png');
  runChromium(bin, ['--window-size=1400,2600', `--screenshot=${shot}`, pathToFileURL(both).href]);
  const { data, info } = await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const near = (r: number, g: number, b: number) => {
    let n = 0;
    for (let i = 0; i < data.length; i += 3) if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 40) n++;
    return n;
  };
  let notWhite = 0;
  for (let i = 0; i < data.length; i += 3) if (data[i] + data[i + 1] + data[i + 2] < 720) notWhite++;
  const pixels = info.width * info.height;
  assert.ok(notWhite / pixels > 0.03, `screenshot not blank: ${((100 * notWhite) / pixels).toFixed(1)}% of pixels are not white`);
  // One colour per worker in every chart (Vega's category colours in worker order): a blue (and the reliability bars), b orange, t red, ensemble teal.
  for (const [name, rgb] of [
    ['blue', [0x4c, 0x78, 0xa8]],
    ['orange', [0xf5, 0x85, 0x18]],
    ['red', [0xe4, 0x57, 0x56]],
    ['teal', [0x72, 0xb7, 0xb2]],
  ] as const) {
    const n = near(rgb[0], rgb[1], rgb[2]);
    assert.ok(n > 500, `screenshot shows ${name} marks: ${n} pixels`);
  }
});

test('bad run directories and bad files: one clear error line, exit 2, no report', { timeout: 180_000 }, async () => {
  const missing = join(root, 'does-not-exist');
  const file = join(root, 'a-file');
  writeFileSync(file, 'x');
  const noMetrics = join(root, 'no-metrics');
  mkdirSync(noMetrics);
  const emptyFile = writeRun('empty-file', []);
  writeFileSync(join(emptyFile, 'metrics.jsonl'), '\n');
  const garbage = writeRun('garbage', [], ['garbage', '{"kind": "step", "worker": 3}', '[1, 2', '42']);
  const old = writeRun('old-format', [], ['{"time":"2026-11-01T00:00:00Z","epoch":0,"worker":"a","role":"member","accuracy":0.7,"nll":0.8,"ece":0.02}']);
  const onlyRun = writeRun('only-run', [{ kind: 'run', time: TIME, run: 'r', algorithm: 'dml', members: [], teachers: [], epochs: 1, batchSize: 1, startStep: 0 }]);
  const never = join(root, 'out-bad', 'never.html');
  mkdirSync(join(root, 'out-bad'));

  // Through the real process (exit code, one line, no stack trace) ...
  const cases: [string, string[], RegExp][] = [
    ['missing directory', [missing], new RegExp(`run directory '${missing}' cannot be read: it does not exist$`)],
    ['no metrics.jsonl (beside a good run)', [alpha, noMetrics, '--out', never], /run directory '.*no-metrics' has no metrics\.jsonl/],
    ['garbage lines', [garbage], /garbage\/metrics\.jsonl has no usable records: skipped 4 of 4 lines that are not metrics records \(first: line 1: not JSON\)$/],
  ];
  const results = await Promise.all(cases.map(([, args]) => runCli(['report', ...args], {}, 120_000)));
  cases.forEach(([label, , what], i) => assertCliError(results[i], what, label));
  assert.ok(!existsSync(never), 'nothing written when one of the runs is bad');
  // ... and the other cases in this process: the same CohortError (which cli.ts prints as one line, exit 2).
  const inProcess: [string, string[], string | undefined, RegExp][] = [
    ['a file', [file], undefined, /'.*a-file' is not a run directory: it is a file/],
    ['empty metrics.jsonl', [emptyFile], undefined, /empty-file\/metrics\.jsonl has no usable records: it is empty$/],
    [
      'old format only',
      [old],
      undefined,
      /has no usable records: skipped 1 of 1 lines .*\(first: line 1: kind: .*eval lines written before metrics records had a kind are not read\)$/,
    ],
    ['only a run record', [onlyRun], undefined, /has no usable records: it holds no step or eval record$/],
    ['unwritable --out', [gamma], join(root, 'no-such-folder', 'r.html'), /cannot write .*no-such-folder\/r\.html: no such folder \(ENOENT\)$/],
  ];
  for (const [label, dirs, out, what] of inProcess) {
    await assert.rejects(writeReport(dirs, out), (e: unknown) => e instanceof CohortError && e.exitCode === 2 && what.test(e.message), label);
  }
});

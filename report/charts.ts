/**
 * The report's charts as Vega-Lite specs: pure functions of the runs' records, no rendering
 * here. One colour per worker name (the same worker has the same colour in every run); when
 * several runs are overlaid each run has its own stroke dash and point shape, and the legend
 * names both. A chart with nothing to draw has no spec and says why (`noData`).
 *
 * Epochs are shown counted from 1 (an eval record of epoch 0 is the evaluation after the first
 * epoch) and steps as steps done (a step record of step s is written after s + 1 steps).
 */
import type { TopLevelSpec } from 'vega-lite';
import type { EvalRecord, StepRecord } from '../shared/metrics/records.js';
import type { RunData } from './read-runs.js';

export interface Chart {
  /** Stable name, also the figure's data-chart attribute. */
  id: string;
  title: string;
  /** undefined: nothing to draw; `noData` says why. */
  spec?: TopLevelSpec;
  noData?: string;
  /** Runs that lack this chart's data, thinned series, ... */
  notes: string[];
}

/** Series longer than this are thinned to evenly spaced points (the first and last kept). */
export const MAX_POINTS_PER_SERIES = 2000;

const WIDTH = 440;
const HEIGHT = 240;

/** Vega's default categorical colours (tableau10): worker i of allWorkers gets PALETTE[i % 10] in every chart. */
const PALETTE = ['#4c78a8', '#f58518', '#e45756', '#72b7b2', '#54a24b', '#eeca3b', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac'];

/** Display order of workers over all runs (first run's order first). */
function allWorkers(runs: RunData[]): string[] {
  const names: string[] = [];
  for (const r of runs) for (const w of r.workers) if (w !== 'ensemble' && !names.includes(w)) names.push(w);
  if (runs.some((r) => r.workers.includes('ensemble'))) names.push('ensemble');
  return names;
}

/** Keeps at most `max` evenly spaced items, the first and the last included. */
export function thin<T>(items: T[], max = MAX_POINTS_PER_SERIES): T[] {
  if (items.length <= max) return items;
  const out: T[] = [];
  for (let i = 0; i < max; i++) out.push(items[Math.round((i * (items.length - 1)) / (max - 1))]);
  return out;
}

interface Row {
  run: string;
  worker: string;
  x: number;
  y: number;
}

/**
 * Colour by worker, the same colour for a worker in every chart while the legend lists only the
 * workers drawn; with several runs, stroke dash (and point shape, when there are points) by run.
 */
function seriesEncoding(runs: RunData[], rows: Row[], points: boolean) {
  const several = runs.length > 1;
  const runScale = { field: 'run', type: 'nominal' as const, title: 'run', sort: runs.map((r) => r.label) };
  const everyWorker = allWorkers(runs);
  const drawn = everyWorker.filter((w) => rows.some((row) => row.worker === w));
  const range = drawn.map((w) => PALETTE[everyWorker.indexOf(w) % PALETTE.length]);
  return {
    color: { field: 'worker', type: 'nominal' as const, title: 'worker', sort: drawn, scale: { domain: drawn, range } },
    ...(several ? { strokeDash: runScale, ...(points ? { shape: runScale } : {}) } : {}),
    detail: { field: 'run', type: 'nominal' as const },
  };
}

function lineChart(
  runs: RunData[],
  rows: Row[],
  opts: { id: string; title: string; x: string; xIsEpoch?: boolean; y: string; percent?: boolean; points: boolean; notes: string[]; noData: string },
): Chart {
  const base = { id: opts.id, title: opts.title, notes: opts.notes };
  if (rows.length === 0) return { ...base, noData: opts.noData };
  const spec: TopLevelSpec = {
    width: WIDTH,
    height: HEIGHT,
    data: { values: rows },
    mark: { type: 'line', point: opts.points, strokeWidth: 1.5, clip: true },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        title: opts.x,
        scale: { zero: false, nice: false },
        axis: opts.xIsEpoch ? { tickMinStep: 1, format: 'd' } : { format: '~s' },
      },
      y: {
        field: 'y',
        type: 'quantitative',
        title: opts.y,
        scale: { zero: false },
        axis: opts.percent ? { format: '.1~%' } : {},
      },
      ...seriesEncoding(runs, rows, opts.points),
    },
  };
  return { ...base, spec };
}

function missing(runs: RunData[], has: (r: RunData) => boolean, what: string): string[] {
  if (runs.length < 2) return [];
  return runs.filter((r) => !has(r)).map((r) => `no ${what} in run ${r.label}`);
}

function evalChart(runs: RunData[], id: string, title: string, y: string, value: (e: EvalRecord) => number, percent: boolean): Chart {
  const rows: Row[] = runs.flatMap((r) => r.evals.map((e) => ({ run: r.label, worker: e.worker, x: e.epoch + 1, y: value(e) })));
  return lineChart(runs, rows, {
    id,
    title,
    x: 'epoch',
    xIsEpoch: true,
    y,
    percent,
    points: true,
    notes: missing(runs, (r) => r.evals.length > 0, 'eval records'),
    noData: 'no data: no eval records',
  });
}

/** Test accuracy per epoch: members, teachers and the ensemble. */
export function accuracyChart(runs: RunData[]): Chart {
  return evalChart(runs, 'accuracy', 'Test accuracy per epoch', 'test accuracy', (e) => e.accuracy, true);
}

/** Test loss (NLL) per epoch: members, teachers and the ensemble. */
export function testLossChart(runs: RunData[]): Chart {
  return evalChart(runs, 'test-loss', 'Test loss (NLL) per epoch', 'test NLL (nats)', (e) => e.nll, false);
}

/** Expected calibration error per epoch. */
export function eceChart(runs: RunData[]): Chart {
  return evalChart(runs, 'ece', 'Expected calibration error (ECE) per epoch', 'test ECE', (e) => e.ece, true);
}

/** Test accuracy during training, every evalEverySteps steps (what shows a run fluctuating). */
export function stepAccuracyChart(runs: RunData[]): Chart {
  const rows: Row[] = runs.flatMap((r) => r.stepEvals.map((e) => ({ run: r.label, worker: e.worker, x: e.step, y: e.accuracy })));
  return lineChart(runs, rows, {
    id: 'accuracy-steps',
    title: 'Test accuracy during training (every evalEverySteps steps)',
    x: 'steps done',
    xIsEpoch: false,
    y: 'test accuracy',
    percent: true,
    points: true,
    notes: missing(runs, (r) => r.stepEvals.length > 0, 'step evaluations'),
    noData: 'no data: the run set no evalEverySteps',
  });
}

function stepChart(runs: RunData[], opts: { id: string; title: string; y: string; value: (s: StepRecord) => number | undefined; what: string }): Chart {
  const notes: string[] = [];
  const rows: Row[] = [];
  for (const r of runs) {
    for (const worker of r.workers) {
      const series = r.steps.filter((s) => s.worker === worker && opts.value(s) !== undefined);
      const kept = thin(series);
      if (kept.length < series.length) notes.push(`${runs.length > 1 ? `${r.label}/` : ''}${worker}: ${kept.length} of ${series.length} points drawn (evenly spaced)`);
      for (const s of kept) rows.push({ run: r.label, worker, x: s.step + 1, y: opts.value(s) as number });
    }
  }
  const lacking = missing(runs, (r) => rows.some((row) => row.run === r.label), opts.what);
  return lineChart(runs, rows, {
    id: opts.id,
    title: opts.title,
    x: 'step',
    y: opts.y,
    points: false,
    notes: [...lacking, ...notes],
    noData: `no data: no ${opts.what}`,
  });
}

/** Training loss over steps (members' step records). */
export function trainLossChart(runs: RunData[]): Chart {
  return stepChart(runs, { id: 'train-loss', title: 'Training loss over steps', y: 'training loss', value: (s) => s.loss, what: 'step records with a loss' });
}

/** Mean wall time per step over steps, per worker. */
export function stepTimeChart(runs: RunData[]): Chart {
  return stepChart(runs, { id: 'step-time', title: 'Step time', y: 'ms per step', value: (s) => s.stepMs, what: 'step records' });
}

/** The last eval record of each worker of a run. */
export function finalEvals(run: RunData): EvalRecord[] {
  const last = new Map<string, EvalRecord>();
  for (const e of run.evals) last.set(e.worker, e);
  return run.workers.flatMap((w) => (last.has(w) ? [last.get(w) as EvalRecord] : []));
}

/**
 * Reliability diagram of each worker's last evaluation: per confidence bin, a bar of the
 * accuracy of the bin's samples, against the diagonal (a perfectly calibrated model). Empty
 * bins have no bar. One panel per worker (per run/worker when several runs).
 */
export function reliabilityChart(runs: RunData[]): Chart {
  const rows: { panel: string; lower: number; upper: number; accuracy: number | null; confidence: number | null; count: number }[] = [];
  const panels: string[] = [];
  const lacking: string[] = [];
  for (const r of runs) {
    let any = false;
    for (const e of finalEvals(r)) {
      if (!e.reliability || e.reliability.length === 0) continue;
      any = true;
      const panel = `${runs.length > 1 ? `${r.label}/` : ''}${e.worker} (epoch ${e.epoch + 1})`;
      panels.push(panel);
      for (const b of e.reliability) rows.push({ panel, lower: b.lower, upper: b.upper, accuracy: b.accuracy, confidence: b.confidence, count: b.count });
    }
    if (!any && runs.length > 1) lacking.push(`no reliability bins in run ${r.label}`);
  }
  const base = { id: 'reliability', title: 'Reliability diagrams at the end (last evaluation)', notes: lacking };
  if (rows.length === 0) return { ...base, noData: 'no data: the last eval records hold no reliability bins' };
  const unit = { type: 'quantitative' as const, scale: { domain: [0, 1] }, axis: { format: '.0%', tickCount: 5 } };
  const spec: TopLevelSpec = {
    data: { values: rows },
    columns: Math.min(4, panels.length),
    facet: { field: 'panel', type: 'nominal', sort: panels, title: null, header: { labelFontSize: 12 } },
    resolve: { axis: { x: 'independent', y: 'independent' } },
    spec: {
      width: 180,
      height: 180,
      layer: [
        {
          transform: [{ filter: 'datum.accuracy != null && datum.count > 0' }],
          mark: { type: 'bar', stroke: 'white', strokeWidth: 0.5, color: '#4c78a8' },
          encoding: {
            x: { field: 'lower', ...unit, title: 'confidence' },
            x2: { field: 'upper' },
            y: { field: 'accuracy', ...unit, title: 'accuracy' },
            y2: { datum: 0 },
          },
        },
        {
          mark: { type: 'rule', color: '#888', strokeDash: [4, 3] },
          encoding: {
            x: { field: 'lower', ...unit, title: 'confidence' },
            x2: { field: 'upper' },
            y: { field: 'lower', ...unit, title: 'accuracy' },
            y2: { field: 'upper' },
          },
        },
      ],
    },
  };
  return { ...base, spec };
}

/** Every chart of the report, in the order shown. */
export function allCharts(runs: RunData[]): Chart[] {
  // The chart of evaluations during training appears when a run has them (evalEverySteps).
  const during = runs.some((r) => r.stepEvals.length > 0) ? [stepAccuracyChart(runs)] : [];
  return [accuracyChart(runs), ...during, testLossChart(runs), eceChart(runs), trainLossChart(runs), stepTimeChart(runs), reliabilityChart(runs)];
}

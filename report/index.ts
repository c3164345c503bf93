/**
 * `cohort report`: reads run directories (read-runs.ts), builds the charts' Vega-Lite specs
 * (charts.ts), renders each to SVG (render-svg.ts) and writes one self-contained HTML page
 * (html.ts), atomically.
 */
import { resolve, join } from 'node:path';
import { writeFileAtomic } from '../shared/io/atomic-write.js';
import { allCharts } from './charts.js';
import { reportHtml, type RenderedChart } from './html.js';
import { describeSkipped, metricsPath, readRuns, type RunData } from './read-runs.js';
import { renderSvg } from './render-svg.js';

export interface ReportResult {
  /** The file written. */
  outPath: string;
  bytes: number;
  /** Charts drawn, and charts shown as 'no data'. */
  charts: number;
  noData: number;
  /** One line per run that had lines skipped ('DIR/metrics.jsonl (run NAME): skipped 2 of 40 lines ... (first: ...)'), then what Vega warned about. */
  warnings: string[];
}

/** Where the report goes without --out: in the run directory for one run, else in the current folder. */
export function defaultOutPath(runDirs: string[]): string {
  return runDirs.length === 1 ? join(runDirs[0], 'report.html') : resolve('report.html');
}

/** Builds the page for already-read runs. */
export async function buildReport(runs: RunData[]): Promise<{ html: string; charts: number; noData: number; warnings: string[] }> {
  const rendered: RenderedChart[] = [];
  const warnings: string[] = [];
  for (const chart of allCharts(runs)) {
    if (!chart.spec) {
      rendered.push({ chart });
      continue;
    }
    const { svg, warnings: said } = await renderSvg(chart.spec, `chart-${chart.id}`);
    rendered.push({ chart, svg });
    for (const w of said) warnings.push(`chart '${chart.title}': ${w}`);
  }
  const charts = rendered.filter((r) => r.svg !== undefined).length;
  return { html: reportHtml(runs, rendered), charts, noData: rendered.length - charts, warnings };
}

/** Reads the runs, writes the report to `outPath` (default: defaultOutPath) and says what it did. */
export async function writeReport(runDirs: string[], outPath?: string): Promise<ReportResult> {
  const runs = readRuns(runDirs);
  const { html, charts, noData, warnings: chartWarnings } = await buildReport(runs);
  const target = outPath ?? defaultOutPath(runDirs);
  const bytes = Buffer.from(html, 'utf8');
  writeFileAtomic(target, bytes);
  const warnings = runs.flatMap((r) => {
    const said = describeSkipped(r.skipped);
    return said ? [`${metricsPath(r)} (run ${r.label}): ${said}`] : [];
  });
  return { outPath: target, bytes: bytes.length, charts, noData, warnings: [...warnings, ...chartWarnings] };
}

/**
 * The report page: one self-contained HTML document. The charts are inline <svg> elements,
 * the style an inline <style>; there is no script and no external resource, and a
 * Content-Security-Policy of default-src 'none' makes a browser refuse any that might appear.
 * Every text from the input (run names, worker names, paths, problems) is escaped.
 */
import { finalEvals, type Chart } from './charts.js';
import { describeSkipped, metricsPath, type RunData } from './read-runs.js';

export interface RenderedChart {
  chart: Chart;
  /** The rendered chart; undefined when the chart has no data. */
  svg?: string;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

/** 0.8805 -> '88.05%' */
export const percent = (fraction: number) => `${(100 * fraction).toFixed(2)}%`;

const STYLE = `
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.95em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f5f5; }
.charts { display: flex; flex-wrap: wrap; gap: 1em 2.5em; }
figure { margin: 0.5em 0 1.5em; }
figure.wide { flex-basis: 100%; }
figcaption { font-weight: 600; margin-bottom: 0.4em; }
.no-data { color: #777; font-style: italic; border: 1px dashed #ccc; padding: 1em; max-width: 560px; }
.notes { color: #666; font-size: 0.9em; margin: 0.3em 0; }
.warning { color: #8a5a00; }
code { font-size: 0.95em; }
`;

function runsTable(runs: RunData[]): string {
  const rows = runs.map((r) => {
    const workers = r.workers.join(', ');
    const records = `${r.evals.length} eval, ${r.steps.length} step`;
    return `<tr><td>${escapeHtml(r.label)}</td><td><code>${escapeHtml(r.dir)}</code></td><td>${escapeHtml(r.run?.algorithm ?? '?')}</td><td>${escapeHtml(workers)}</td><td>${records}</td></tr>`;
  });
  return `<table class="runs"><thead><tr><th>run</th><th>directory</th><th>algorithm</th><th>workers</th><th>records</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function warnings(runs: RunData[]): string {
  const items = runs.flatMap((r) => {
    const said = describeSkipped(r.skipped);
    return said ? [`<li>${escapeHtml(r.label)} (<code>${escapeHtml(metricsPath(r))}</code>): ${escapeHtml(said)}</li>`] : [];
  });
  return items.length === 0 ? '' : `<ul class="notes warning">${items.join('')}</ul>`;
}

function finalTable(run: RunData): string {
  const rows = finalEvals(run).map(
    (e) =>
      `<tr><td>${escapeHtml(e.worker)}</td><td>${escapeHtml(e.role)}</td><td class="num">${e.epoch + 1}</td><td class="num">${percent(e.accuracy)}</td><td class="num">${e.nll.toFixed(4)}</td><td class="num">${percent(e.ece)}</td></tr>`,
  );
  const body = rows.length > 0 ? rows.join('') : '<tr><td colspan="6" class="no-data">no data: no eval records</td></tr>';
  return `<table class="final" data-run="${escapeHtml(run.label)}"><thead><tr><th>worker</th><th>role</th><th>epoch</th><th>test accuracy</th><th>NLL</th><th>ECE</th></tr></thead><tbody>${body}</tbody></table>`;
}

function figure({ chart, svg }: RenderedChart): string {
  const body = svg ?? `<p class="no-data">${escapeHtml(chart.noData ?? 'no data')}</p>`;
  const notes = chart.notes.length === 0 ? '' : `<ul class="notes">${chart.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>`;
  const wide = chart.id === 'reliability' ? ' wide' : '';
  return `<figure class="chart${wide}" data-chart="${escapeHtml(chart.id)}"><figcaption>${escapeHtml(chart.title)}</figcaption>\n${body}\n${notes}</figure>`;
}

/** The whole document. */
export function reportHtml(runs: RunData[], charts: RenderedChart[]): string {
  const names = runs.map((r) => r.label).join(', ');
  const finals = runs.map((r) => `${runs.length > 1 ? `<h3>${escapeHtml(r.label)}</h3>` : ''}${finalTable(r)}`).join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cohort report: ${escapeHtml(names)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Cohort report</h1>
<p class="notes">Written by <code>cohort report</code> from each run's metrics.jsonl. Accuracy and ECE in percent, NLL in nats; epochs counted from 1.</p>
<h2>Runs</h2>
${runsTable(runs)}
${warnings(runs)}
<h2>Final test metrics</h2>
<p class="notes">The last evaluation of each worker.</p>
${finals}
<h2>Charts</h2>
<div class="charts">
${charts.map(figure).join('\n')}
</div>
</body>
</html>
`;
}

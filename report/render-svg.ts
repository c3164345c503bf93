/**
 * Renders a Vega-Lite spec to an SVG string in Node: Vega-Lite compiles it to a Vega spec, and
 * a headless Vega view (renderer 'none': no canvas, no DOM) writes the SVG. Data are inline, so
 * nothing is loaded. Vega-Lite's and Vega's warnings are returned instead of printed on the
 * console (`cohort report` prints them as warnings; the tests expect none).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** Shared look of every chart. */
const CONFIG = {
  background: 'white',
  font: 'sans-serif',
  axis: { labelFontSize: 11, titleFontSize: 12, grid: true, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12, symbolStrokeWidth: 2, labelLimit: 320 },
  view: { stroke: '#ddd' },
};

/**
 * Prefixes the SVG's element ids (Vega's clip paths, gradients) and the local references to
 * them, so that several SVGs inlined in one page never share an id.
 */
export function prefixIds(svg: string, prefix: string): string {
  return svg
    .replace(/\sid="([^"]+)"/g, (_, id: string) => ` id="${prefix}-${id}"`)
    .replace(/url\(#([^)]+)\)/g, (_, id: string) => `url(#${prefix}-${id})`)
    .replace(/(\s(?:xlink:)?href)="#([^"]+)"/g, (_, attr: string, id: string) => `${attr}="#${prefix}-${id}"`);
}

/**
 * The chart as a standalone <svg> element (no XML declaration), ready to inline in HTML, its ids
 * starting with `idPrefix`; and what Vega-Lite and Vega warned about while making it.
 */
export async function renderSvg(spec: TopLevelSpec, idPrefix: string): Promise<{ svg: string; warnings: string[] }> {
  const warnings: string[] = [];
  const logger = vega.logger(vega.Warn, undefined, (_method, _level, args) => warnings.push(args.map(String).join(' ')));
  const compiled = compile({ ...spec, config: { ...CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec, { logger });
  const view = new vega.View(vega.parse(compiled.spec), { renderer: 'none', logger });
  try {
    const svg = await view.toSVG();
    return { svg: prefixIds(svg, idPrefix), warnings };
  } finally {
    view.finalize();
  }
}

/**
 * Validation of user-written configuration against a zod schema: the one place that turns
 * schema violations into a CohortError listing every bad key with what was expected there.
 */
import type { z } from 'zod';
import { CohortError } from '../errors.js';

/** Dotted path of an issue, prefixed by what is being parsed: `dataset.train.images`. */
function issuePath(prefix: string, path: readonly PropertyKey[]): string {
  return [prefix, ...path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))].join('.').replace(/\.\[/g, '[');
}

/** Parses `value`, or throws one CohortError naming every bad key under `prefix`. */
export function parseConfig<S extends z.ZodType>(schema: S, value: unknown, prefix: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const where = issuePath(prefix, issue.path);
    if (issue.code === 'unrecognized_keys') return `${where}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    return `${where}: ${issue.message}`;
  });
  throw new CohortError(`invalid ${prefix} config:\n  ${lines.join('\n  ')}`, { code: 'CONFIG_INVALID' });
}

/**
 * `cohort eval RUN_DIR`: evaluates the saved final weights of a run's members on the test split
 * (each with its own input downscale), in this process, and returns accuracy, NLL and ECE.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { openDataset } from '../shared/data/datasets.js';
import { CohortError } from '../shared/errors.js';
import { loadModelWeights } from '../shared/io/model-files.js';
import type { MetricSummary } from '../shared/metrics/index.js';
import { exitModel } from '../shared/models/index.js';
import { evaluate } from '../shared/training/evaluate.js';
import { buildWorkerModel, findWorker } from './run-worker.js';

export interface SavedEvaluation {
  member: string;
  metrics: MetricSummary;
}

/** Evaluates `members` (default: every member of the run) from `runDir` (the folder holding config.json). */
export async function evaluateSaved(runDir: string, members?: string[], log: (line: string) => void = () => {}): Promise<SavedEvaluation[]> {
  const configPath = join(runDir, 'config.json');
  if (!existsSync(configPath)) throw new CohortError(`${runDir} is not a run directory (no config.json)`, { code: 'USAGE' });
  const config = resolveRunConfig(JSON.parse(readFileSync(configPath, 'utf8')));
  const dataset = await openDataset(config.dataset, log);
  const results: SavedEvaluation[] = [];
  for (const name of members ?? config.members.map((m) => m.name)) {
    const { worker, index } = findWorker(config, name);
    const test = dataset.loader({ split: 'test', batchSize: 500, seed: config.seed, downscale: worker.downscale });
    const built = buildWorkerModel(config, worker, index, test.imageShape, dataset.classNames.length);
    try {
      loadModelWeights(built.model, join(runDir, name, 'final'));
      results.push({ member: name, metrics: await evaluate(exitModel(built), test) });
    } finally {
      built.model.dispose();
      await test.close();
    }
  }
  return results;
}

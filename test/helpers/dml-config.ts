/**
 * The small DML run the process-level tests train (fault injection, liveness, graceful stop,
 * hostile input, progress, hosts): `mlp-student` members on wasm, SGD lr 0.05, batch 32, a step
 * record per worker and step, written as ROOT/NAME.json with its runs under ROOT/runs. Each test
 * passes what it varies (steps, members, dropout, checkpoints, recovery, ...); a key set to
 * undefined in `extra` is left out (the config's default).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface DmlTestRun {
  /** The folder of the config file and of `runs/`. */
  root: string;
  /** Fashion-MNIST's cache folder. */
  cacheDir: string;
  members: string[];
  /** Steps of one epoch (trainLimit = steps x 32). */
  steps: number;
  /** Dropout in every member (a resumed or rolled-back run must replay its masks). */
  dropout?: number;
  /** Any other key of the run config (checkpoint, recovery, exchange, epochs, progressEvery ...). */
  extra?: Record<string, unknown>;
}

/** Writes the config file of run `name`; returns its path. */
export function writeDmlConfig(name: string, run: DmlTestRun): string {
  const model = { name: 'mlp-student', ...(run.dropout === undefined ? {} : { dropout: run.dropout }) };
  const path = join(run.root, `${name}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      name,
      algorithm: 'dml',
      dataset: { name: 'fashion-mnist', cacheDir: run.cacheDir },
      batchSize: 32,
      trainLimit: run.steps * 32,
      progressEvery: 1, // a step record per worker and step: fault triggers follow them
      members: run.members.map((n) => ({ name: n, model, backend: 'wasm', optimizer: { name: 'sgd', lr: 0.05 } })),
      runDir: join(run.root, 'runs'),
      ...run.extra,
    }),
  );
  return path;
}

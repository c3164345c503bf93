/**
 * Checkpoints of a run. A global checkpoint is the folder `RUN/checkpoints/step-NNNNNNNNN/`
 * holding one folder per member (written by that member's worker after step NNN's update:
 * model.json + weights.bin, optimizer.json + optimizer.bin, then state.json last) and, written
 * by the coordinator once every member has reported, `MANIFEST.json`. Only a folder with a
 * manifest is complete; an interrupted one is never loaded and is removed when pruned. The
 * sample order and augmentation are functions of (seed, epoch, index), so the step number is
 * the whole data position; learning-rate schedules are functions of the step too.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { CohortError } from '../errors.js';
import { failpoint } from '../faults/failpoints.js';
import { optimizerState, restoreOptimizerState } from '../training/optimizer-state.js';
import { fileErrorReason, writeFileAtomic, writeFileAtomicAsync } from './atomic-write.js';
import { loadModelWeights, loadNamedTensors, saveModel, saveNamedTensors } from './model-files.js';

/** What a member needs besides weights and optimizer state to continue exactly. */
export interface MemberState {
  /** The next step to run (the checkpoint holds the state after step - 1). */
  step: number;
  /** The loss of step - 1, reported with the next step's logits. */
  lastLoss?: number;
}

export interface CheckpointManifest {
  format: 'cohort-checkpoint-1';
  /** The next step to run. */
  step: number;
  members: string[];
  time: string;
}

const STEP_DIR = /^step-(\d{9})$/;

export function checkpointsRoot(runDir: string): string {
  return join(runDir, 'checkpoints');
}

/** The folder of the global checkpoint whose next step is `step`. */
export function checkpointDir(runDir: string, step: number): string {
  return join(checkpointsRoot(runDir), `step-${String(step).padStart(9, '0')}`);
}

/** Writes a member's part of a global checkpoint, state.json last; a failure names the folder and why. */
export async function saveMemberCheckpoint(dir: string, model: tfl.LayersModel, optimizer: tf.Optimizer, state: MemberState): Promise<void> {
  try {
    mkdirSync(dir, { recursive: true });
    await saveModel(model, dir);
    const optimizerTensors = await optimizerState(optimizer);
    try {
      await saveNamedTensors(optimizerTensors, dir, 'optimizer');
    } finally {
      tf.dispose(optimizerTensors.map((n) => n.tensor));
    }
    failpoint('checkpoint-before-state', state.step);
    writeFileAtomic(join(dir, 'state.json'), Buffer.from(`${JSON.stringify(state)}\n`));
  } catch (error) {
    const reason = error instanceof CohortError ? error.message : fileErrorReason(error);
    throw new CohortError(`cannot write the checkpoint ${dir} (${reason}); the last complete checkpoint is untouched`, { code: 'CHECKPOINT_FAILED' });
  }
}

/** Restores weights and optimizer state (exactly: optimizer-state.ts) from `dir`; returns the member state. */
export async function loadMemberCheckpoint(dir: string, model: tfl.LayersModel, optimizer: tf.Optimizer): Promise<MemberState> {
  const statePath = join(dir, 'state.json');
  if (!existsSync(statePath)) throw new CohortError(`incomplete member checkpoint ${dir} (no state.json)`, { code: 'CHECKPOINT_MISMATCH' });
  const state = JSON.parse(readFileSync(statePath, 'utf8')) as MemberState;
  loadModelWeights(model, dir);
  const named = loadNamedTensors(dir, 'optimizer');
  try {
    await restoreOptimizerState(optimizer, named);
  } finally {
    for (const { tensor } of named) tensor.dispose();
  }
  return state;
}

/** Marks the checkpoint of `step` complete: every member's folder is written (without blocking the event loop). */
export async function writeCheckpointManifest(runDir: string, step: number, members: string[]): Promise<void> {
  const dir = checkpointDir(runDir, step);
  for (const m of members) {
    if (!existsSync(join(dir, m, 'state.json'))) throw new CohortError(`checkpoint ${dir}: member ${m} has not written its state`, { code: 'CHECKPOINT_FAILED' });
  }
  const manifest: CheckpointManifest = { format: 'cohort-checkpoint-1', step, members, time: new Date().toISOString() };
  await writeFileAtomicAsync(join(dir, 'MANIFEST.json'), Buffer.from(`${JSON.stringify(manifest, null, 1)}\n`));
}

/** Complete checkpoints, oldest first. */
export function completeCheckpoints(runDir: string): CheckpointManifest[] {
  const root = checkpointsRoot(runDir);
  if (!existsSync(root)) return [];
  const out: CheckpointManifest[] = [];
  for (const name of readdirSync(root).sort()) {
    if (!STEP_DIR.test(name)) continue;
    const path = join(root, name, 'MANIFEST.json');
    if (!existsSync(path)) continue;
    try {
      const manifest = JSON.parse(readFileSync(path, 'utf8')) as CheckpointManifest;
      if (manifest.format === 'cohort-checkpoint-1') out.push(manifest);
    } catch {
      // An unreadable manifest is not a complete checkpoint.
    }
  }
  return out;
}

export function latestCheckpoint(runDir: string): CheckpointManifest | undefined {
  return completeCheckpoints(runDir).at(-1);
}

/** Keeps the newest `keep` complete checkpoints; removes older ones and incomplete ones older than the newest. */
export async function pruneCheckpoints(runDir: string, keep: number): Promise<void> {
  const complete = completeCheckpoints(runDir);
  const kept = new Set(complete.slice(-keep).map((m) => m.step));
  const newest = complete.at(-1)?.step ?? -1;
  const root = checkpointsRoot(runDir);
  if (!existsSync(root)) return;
  for (const name of readdirSync(root)) {
    const match = STEP_DIR.exec(name);
    if (!match) continue;
    const step = Number(match[1]);
    if (!kept.has(step) && step < newest) await rm(join(root, name), { recursive: true, force: true });
  }
}

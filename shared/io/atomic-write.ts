/**
 * Crash-safe file writes: a temporary file beside the target, fsync, then rename (and an fsync
 * of the folder, so the rename itself survives a power cut), so a reader, or a run resumed
 * after a crash, sees either the old file or the whole new one. A write that fails (a full
 * disk, a folder that is not writable) removes its temporary file and throws a CohortError
 * that names the file and the reason; the old file is untouched.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { CohortError } from '../errors.js';

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EROFS: 'read-only file system',
  ENOENT: 'no such folder',
  ENOTDIR: 'a part of the path is a file, not a folder',
};

/** Why a file-system call failed, in words, with the error code: 'no space left on device (ENOSPC)'. */
export function fileErrorReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code && REASONS[code]) return `${REASONS[code]} (${code})`;
  return (error as Error)?.message ?? String(error);
}

/** Writes `bytes` to `path` atomically: a reader sees the old file or the whole new one. */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const temporary = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fd = openSync(temporary, 'w');
    try {
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw new CohortError(`cannot write ${path}: ${fileErrorReason(error)}`, { code: 'FILE_UNWRITABLE', cause: error });
  }
  syncFolder(dirname(path));
}

/**
 * writeFileAtomic without blocking the event loop: for a process that must keep answering
 * (the coordinator's heartbeats) while a slow disk syncs.
 */
export async function writeFileAtomicAsync(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const file = await open(temporary, 'w');
    try {
      await file.writeFile(bytes);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw new CohortError(`cannot write ${path}: ${fileErrorReason(error)}`, { code: 'FILE_UNWRITABLE', cause: error });
  }
  try {
    const folder = await open(dirname(path), 'r');
    await folder.sync().finally(() => folder.close());
  } catch {
    // As in syncFolder.
  }
}

/** Flushes a folder's entries (a rename) to disk; best effort where folders cannot be opened. */
function syncFolder(folder: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(folder, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a folder; the file itself is already synced.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * An ImageNet-style image folder, `root/<class>/<image>`: the class index is the position of
 * the folder name in code-point order (torchvision's ImageFolder order for ASCII names), files
 * are sorted the same way within a class, and only .jpeg / .jpg / .png files (any case) count.
 * Hidden entries (names starting with '.') are ignored. Scanning is the only I/O here; decoding
 * is decode-image.ts.
 */
import { readdirSync, statSync, type Dirent } from 'node:fs';
import { join, resolve } from 'node:path';
import { CohortError } from '../errors.js';

export const IMAGE_EXTENSIONS = ['.jpeg', '.jpg', '.png'] as const;

export interface ImageSample {
  path: string;
  label: number;
}

export interface ImageFolder {
  /** Absolute path of the root folder. */
  root: string;
  /** Class folder names; class k is classes[k]. */
  classes: string[];
  /** Every image, class by class, files in code-point order within a class. */
  samples: ImageSample[];
}

/** Orders strings by Unicode code point (what Python's sorted() does), via their UTF-8 bytes. */
export function compareCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function isImageFile(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

function listDir(dir: string, what: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CohortError(`${what} not found: ${dir}`, { code: 'DATASET_UNAVAILABLE' });
    if (code === 'ENOTDIR') throw new CohortError(`${what} is not a directory: ${dir}`, { code: 'DATASET_UNAVAILABLE' });
    throw new CohortError(`cannot read ${what} ${dir}: ${(error as Error).message}`, { code: 'DATASET_UNAVAILABLE', cause: error });
  }
}

/** Follows symbolic links (datasets are often trees of links) to tell files from folders. */
function kind(dir: string, entry: Dirent): 'file' | 'dir' | 'other' {
  if (entry.isFile()) return 'file';
  if (entry.isDirectory()) return 'dir';
  if (!entry.isSymbolicLink()) return 'other';
  try {
    const stat = statSync(join(dir, entry.name));
    return stat.isFile() ? 'file' : stat.isDirectory() ? 'dir' : 'other';
  } catch {
    return 'other'; // a dangling link
  }
}

const sortedNames = (entries: Dirent[]): string[] => entries.map((e) => e.name).sort(compareCodePoints);

/** Scans `root`; throws a CohortError naming the path when it is missing, has no class folders or a class has no images. */
export function scanImageFolder(root: string): ImageFolder {
  const absolute = resolve(root);
  const entries = listDir(absolute, 'image folder').filter((e) => !e.name.startsWith('.'));
  const classes = sortedNames(entries.filter((e) => kind(absolute, e) === 'dir'));
  if (classes.length === 0) throw new CohortError(`image folder has no class folders (expected root/<class>/<image>): ${absolute}`, { code: 'DATA_INVALID' });
  const samples: ImageSample[] = [];
  const empty: string[] = [];
  classes.forEach((name, label) => {
    const dir = join(absolute, name);
    const files = listDir(dir, 'class folder').filter((e) => !e.name.startsWith('.') && isImageFile(e.name) && kind(dir, e) === 'file');
    if (files.length === 0) empty.push(dir);
    for (const file of sortedNames(files)) samples.push({ path: join(dir, file), label });
  });
  if (empty.length > 0) {
    const shown = empty.slice(0, 3).join(', ') + (empty.length > 3 ? ` and ${empty.length - 3} more` : '');
    throw new CohortError(`image folder ${absolute}: no ${IMAGE_EXTENSIONS.join('/')} images in class folder ${shown}`, { code: 'DATA_INVALID' });
  }
  return { root: absolute, classes, samples };
}

/**
 * `npm run bench -- data`: images/s of the image-folder loader (JPEG decode, RandomResizedCrop
 * to 224, flip, ImageNet normalisation) with the work on the main thread (threads 0) and in
 * piscina pools of 1 and 2 worker threads, measured side by side in one run: every round times
 * one epoch per mode, and the median over rounds is reported. With --busy-ms the consumer also
 * blocks the main thread that long per batch, as a synchronous training step would.
 * The images (noisy gradients, so decoding costs what a photo does) are written once to a cache.
 */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { defaultCacheDir } from '../shared/data/fashion-mnist.js';
import { scanImageFolder } from '../shared/data/image-folder.js';
import { ImageFolderLoader } from '../shared/data/image-loader.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { trainTransform } from '../shared/data/transforms.js';
import { median } from './stats.js';

export interface DataBenchOptions {
  images: number;
  width: number;
  height: number;
  size: number;
  batchSize: number;
  rounds: number;
  threads: number[];
  prefetch: number;
  /** Images of one batch decoded at the same time. */
  decodeConcurrency: number;
  /** Milliseconds the consumer blocks the main thread per batch (a stand-in for a training step). */
  busyMs: number;
  dir?: string;
}

export interface DataResult {
  threads: number;
  imagesPerSecond: number;
  rounds: number[];
  /** Over the timed rounds: batches handed out, those the consumer had to wait for, and how long. */
  batches: number;
  stalls: number;
  stalledMs: number;
}

const CLASSES = 4;

/** A noisy smooth picture: low-frequency waves, a gradient and per-pixel noise. */
function picture(width: number, height: number, seed: number): Buffer {
  const random = mulberry32(seed);
  const [fx, fy, phase] = [8 + random() * 30, 8 + random() * 30, random() * 6];
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const wave = Math.sin(x / fx + phase) * Math.cos(y / fy - phase);
      for (let c = 0; c < 3; c++) {
        const v = 128 + 70 * wave * (c === 1 ? -1 : 1) + ((x + y * (c + 1)) % 97) - 48 + (random() - 0.5) * 40;
        data[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, v));
      }
    }
  }
  return data;
}

/** Writes the benchmark's JPEGs unless they are there already; returns the folder. */
async function ensureImages(o: DataBenchOptions, print: (line: string) => void): Promise<string> {
  const dir = o.dir ?? join(defaultCacheDir(), 'bench-images', `${o.width}x${o.height}-${o.images}`);
  const count = (d: string) => (existsSync(d) ? readdirSync(d).length : 0);
  const present = Array.from({ length: CLASSES }, (_, c) => count(join(dir, `class${c}`))).reduce((a, b) => a + b, 0);
  if (present === o.images) return dir;
  const start = performance.now();
  for (let i = 0; i < o.images; i++) {
    const classDir = join(dir, `class${i % CLASSES}`);
    mkdirSync(classDir, { recursive: true });
    const jpeg = await sharp(picture(o.width, o.height, i + 1), { raw: { width: o.width, height: o.height, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer();
    writeFileSync(join(classDir, `img${String(i).padStart(5, '0')}.jpg`), jpeg);
  }
  print(`wrote ${o.images} ${o.width}x${o.height} JPEGs to ${dir} in ${((performance.now() - start) / 1000).toFixed(1)} s`);
  return dir;
}

function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // a synchronous training step holds the event loop like this
  }
}

/** One epoch of `loader`, in images/s. */
async function timeEpoch(loader: ImageFolderLoader, epoch: number, busyMs: number): Promise<number> {
  let images = 0;
  const start = performance.now();
  for await (const batch of loader.epoch(epoch)) {
    images += batch.shape[0];
    if (busyMs > 0) busyWait(busyMs);
  }
  return images / ((performance.now() - start) / 1000);
}

export async function benchData(o: DataBenchOptions, print: (line: string) => void): Promise<DataResult[]> {
  const root = await ensureImages(o, print);
  const folder = scanImageFolder(root);
  const bytes = folder.samples.reduce((sum, s) => sum + statSync(s.path).size, 0);
  print(
    `data benchmark: ${folder.samples.length} JPEGs of ${o.width}x${o.height} (${(bytes / folder.samples.length / 1024).toFixed(0)} KiB average), ` +
      `RandomResizedCrop(${o.size}) + flip + normalise, batch ${o.batchSize}, prefetch ${o.prefetch}, ${o.decodeConcurrency} decodes per batch at a time, ${o.rounds} round(s), ` +
      `${availableParallelism()} CPUs, UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}, sharp concurrency ${sharp.concurrency()}` +
      (o.busyMs > 0 ? `, main thread busy ${o.busyMs} ms per batch` : ''),
  );
  const loaders = o.threads.map(
    (threads) =>
      new ImageFolderLoader({
        root,
        folder,
        batchSize: o.batchSize,
        seed: 1,
        transform: trainTransform({ size: o.size }),
        threads,
        prefetch: o.prefetch,
        decodeConcurrency: o.decodeConcurrency,
      }),
  );
  const perMode: number[][] = o.threads.map(() => []);
  let warm: { batches: number; stalls: number; stalledMs: number }[] = [];
  try {
    // warm up: start the pools, load sharp in every worker, fill the caches
    for (const loader of loaders) await timeEpoch(loader, 0, 0);
    warm = loaders.map((l) => ({ ...l.waits }));
    for (let r = 0; r < o.rounds; r++) {
      const line: string[] = [];
      for (const [m, loader] of loaders.entries()) {
        const rate = await timeEpoch(loader, r + 1, o.busyMs);
        perMode[m].push(rate);
        line.push(`threads ${o.threads[m]}: ${rate.toFixed(0)}/s`);
      }
      print(`  round ${r + 1}: ${line.join(', ')}`);
    }
  } finally {
    for (const loader of loaders) await loader.close();
  }
  const results = o.threads.map((threads, m) => ({
    threads,
    imagesPerSecond: median(perMode[m]),
    rounds: perMode[m],
    batches: loaders[m].waits.batches - warm[m].batches,
    stalls: loaders[m].waits.stalls - warm[m].stalls,
    stalledMs: loaders[m].waits.stalledMs - warm[m].stalledMs,
  }));
  const main = results.find((r) => r.threads === 0);
  print('');
  print('| mode | images/s (median) | min / max over rounds | x main thread | batches waited for (time) |');
  print('|---|---|---|---|---|');
  for (const r of results) {
    const mode = r.threads === 0 ? 'main thread (threads 0)' : `pool of ${r.threads} worker thread${r.threads > 1 ? 's' : ''}`;
    const ratio = main ? (r.imagesPerSecond / main.imagesPerSecond).toFixed(2) : '-';
    const waited = `${r.stalls} of ${r.batches} (${(r.stalledMs / 1000).toFixed(2)} s)`;
    print(`| ${mode} | ${r.imagesPerSecond.toFixed(0)} | ${Math.min(...r.rounds).toFixed(0)} / ${Math.max(...r.rounds).toFixed(0)} | ${ratio} | ${waited} |`);
  }
  return results;
}

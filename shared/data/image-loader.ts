/**
 * Batches of an image folder for training: BatchSampler picks the order (the same (seed, epoch)
 * gives the same batches in every process, state() / restore() resume exactly), a piscina pool
 * of decode workers prepares up to `prefetch` batches ahead, and `epoch(e)` yields them in
 * order. Corrupt files are skipped, warned about once each and counted. `threads: 0` runs the
 * same decodeBatch on the main thread (no pool), for comparison and for small machines.
 */
import { availableParallelism } from 'node:os';
import { Piscina } from 'piscina';
import { CohortError } from '../errors.js';
import { decodeBatch, type DecodeTask, type DecodedBatch } from './decode-worker.js';
import { scanImageFolder, type ImageFolder } from './image-folder.js';
import { BatchSampler, ConsumerPosition, type SamplerState } from './sampler.js';
import type { Batch, BatchSource } from './source.js';
import { transformOutputShape, validateTransform, type TransformSpec } from './transforms.js';

export interface ImageFolderLoaderOptions {
  root: string;
  batchSize: number;
  /** The cohort's seed: sample order and augmentation. */
  seed: number;
  /** This member's own augmentation seed (default 0): other crops and flips, the same batches. */
  memberSeed?: number;
  transform: TransformSpec;
  /** Decode worker threads (default min(2, CPUs)); 0 decodes on the main thread. */
  threads?: number;
  /** Batches submitted ahead of the consumer (default 4). */
  prefetch?: number;
  /** Images of one batch decoded at the same time (default 2). */
  decodeConcurrency?: number;
  dropLast?: boolean;
  /** Shuffle every epoch (default: for a 'train' transform only; 'eval' walks the folder in order). */
  shuffle?: boolean;
  /** Use only the first `limit` samples of each epoch's order. */
  limit?: number;
  /** Where the one warning per corrupt file goes (default console.warn). */
  warn?: (message: string) => void;
  /** An already scanned folder (saves rescanning `root`). */
  folder?: ImageFolder;
}

/** How often the consumer found its next batch not ready yet (the pool did not keep up). */
export interface LoaderWaits {
  /** Batches handed to the consumer. */
  batches: number;
  /**
   * Of those, batches the consumer waited at least STALL_MS for (a shorter wait is the event
   * loop delivering a batch that a worker finished while the main thread was busy).
   */
  stalls: number;
  /** Total time the consumer spent waiting on those, in milliseconds. */
  stalledMs: number;
}

export const STALL_MS = 1;

const workerFile = new URL(`./decode-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

export class ImageFolderLoader implements BatchSource {
  readonly folder: ImageFolder;
  readonly batchesPerEpoch: number;
  readonly threads: number;
  readonly prefetch: number;
  readonly size: number;
  readonly waits: LoaderWaits = { batches: 0, stalls: 0, stalledMs: 0 };
  /** Samples dropped so far (a corrupt file counts once per epoch it is drawn in). */
  skipped = 0;
  private readonly corrupt = new Set<string>();
  private readonly sampler: BatchSampler;
  private readonly pool: Piscina | undefined;
  private readonly transform: TransformSpec;
  private readonly warn: (message: string) => void;
  /** The next batch the consumer has not received yet (the sampler itself runs ahead). */
  private readonly position: ConsumerPosition;
  private closed = false;
  private iterating = false;

  constructor(private readonly options: ImageFolderLoaderOptions) {
    this.transform = validateTransform(options.transform);
    this.threads = options.threads ?? Math.min(2, availableParallelism());
    this.prefetch = options.prefetch ?? 4;
    if (!Number.isInteger(this.threads) || this.threads < 0)
      throw new CohortError(`image loader: threads must be an integer >= 0, got ${this.threads}`, { code: 'INVALID_ARGUMENT' });
    if (!Number.isInteger(this.prefetch) || this.prefetch < 1)
      throw new CohortError(`image loader: prefetch must be an integer >= 1, got ${this.prefetch}`, { code: 'INVALID_ARGUMENT' });
    this.folder = options.folder ?? scanImageFolder(options.root);
    this.sampler = new BatchSampler({
      count: this.folder.samples.length,
      batchSize: options.batchSize,
      seed: options.seed,
      dropLast: options.dropLast,
      shuffle: options.shuffle ?? this.transform.kind === 'train',
      limit: options.limit,
    });
    this.position = new ConsumerPosition(this.sampler);
    this.size = this.sampler.size;
    this.batchesPerEpoch = this.sampler.batchesPerEpoch;
    this.warn = options.warn ?? ((line) => console.warn(line));
    this.pool = this.threads > 0 ? new Piscina({ filename: workerFile.href, minThreads: this.threads, maxThreads: this.threads }) : undefined;
  }

  get classNames(): readonly string[] {
    return this.folder.classes;
  }

  /** [h, w, 3] of every image the loader yields. */
  get imageShape(): [number, number, 3] {
    return transformOutputShape(this.transform);
  }

  /** Distinct files found corrupt or unreadable so far. */
  get corruptFiles(): ReadonlySet<string> {
    return this.corrupt;
  }

  /** Where the consumer stands: the next batch it will be given. Save it with a checkpoint. */
  state(): SamplerState {
    return this.position.state();
  }

  /** Continue from a saved state(): the next batch yielded is exactly the one that was next then. */
  restore(state: SamplerState): void {
    this.position.restore(state);
  }

  /**
   * The batches of epoch `e` in order: from the restored position when it lies in `e`, from
   * the start otherwise. Breaking out of the loop early is fine; state() stays exact.
   */
  async *epoch(e: number): AsyncGenerator<Batch> {
    if (this.closed) throw new CohortError('image loader: epoch() after close()', { code: 'INVALID_ARGUMENT' });
    if (!Number.isInteger(e) || e < 0) throw new CohortError(`image loader: epoch must be an integer >= 0, got ${e}`, { code: 'INVALID_ARGUMENT' });
    if (this.iterating) throw new CohortError('image loader: one epoch() at a time (finish or break out of the previous loop first)', { code: 'INVALID_ARGUMENT' });
    this.iterating = true;
    const start = this.position.current.epoch === e ? this.position.current.batch : 0;
    this.position.restore({ epoch: e, batch: start });
    const pending: Promise<Batch>[] = [];
    let submitted = start;
    try {
      while (pending.length > 0 || submitted < this.batchesPerEpoch) {
        while (pending.length < this.prefetch && submitted < this.batchesPerEpoch) {
          const job = this.run(e, submitted++);
          job.catch(() => {}); // awaited in order below; this only stops an early failure from being "unhandled"
          pending.push(job);
        }
        const batch = await this.take(pending.shift()!);
        this.position.current = { epoch: e, batch: batch.batch + 1 };
        yield batch;
      }
    } finally {
      pending.length = 0; // whatever is still running finishes unobserved
      this.iterating = false;
    }
  }

  /** Awaits the next batch, counting a stall when it was not ready yet. */
  private async take(job: Promise<Batch>): Promise<Batch> {
    let ready = false;
    void job.then(
      () => (ready = true),
      () => (ready = true),
    );
    await Promise.resolve(); // lets an already settled job mark itself ready
    this.waits.batches++;
    if (ready) return job;
    const started = performance.now();
    const batch = await job;
    const waited = performance.now() - started;
    if (waited >= STALL_MS) this.waits.stalls++;
    this.waits.stalledMs += waited;
    return batch;
  }

  /** Decodes batch `b` of epoch `e` (the sampler's next) in the pool or on this thread. */
  private async run(e: number, b: number): Promise<Batch> {
    const sampled = this.sampler.next();
    if (sampled.epoch !== e || sampled.batch !== b) throw new Error(`image loader: sampler at ${sampled.epoch}/${sampled.batch}, expected ${e}/${b}`);
    const samples = Array.from(sampled.indices, (i) => this.folder.samples[i]);
    const task: DecodeTask = {
      paths: samples.map((s) => s.path),
      labels: Int32Array.from(samples, (s) => s.label),
      indices: Uint32Array.from(sampled.indices),
      seed: this.options.seed,
      epoch: e,
      memberSeed: this.options.memberSeed ?? 0,
      transform: this.transform,
      concurrency: this.options.decodeConcurrency,
    };
    const decoded: DecodedBatch = this.pool ? await this.pool.run(task) : await decodeBatch(task);
    for (const skip of decoded.skipped) {
      this.skipped++;
      if (this.corrupt.has(skip.path)) continue;
      this.corrupt.add(skip.path);
      this.warn(`cohort: skipping unreadable image ${skip.path}: ${skip.reason}`);
    }
    return { images: decoded.images, shape: decoded.shape, labels: decoded.labels, indices: decoded.indices, epoch: e, batch: b };
  }

  /** Stops the decode workers; batches still in flight are abandoned. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool?.destroy();
  }
}

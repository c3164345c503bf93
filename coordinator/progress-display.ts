/**
 * What a run shows while it trains. On a terminal: one line per member and teacher (epoch,
 * step, images/s, loss, running accuracy, ETA) redrawn in place by cli-progress, with every
 * other log line printed above them. Elsewhere (CI, a log file): a plain line per worker at most
 * every `plainEveryMs`, and at the end of each of its epochs. Fed by the workers' progress
 * messages through the coordinator.
 */
import cliProgress from 'cli-progress';

export interface ProgressUpdate {
  worker: string;
  epoch: number;
  /** The global step just finished (0-based). */
  step: number;
  totalSteps: number;
  loss?: number;
  accuracy?: number;
  imagesPerSecond: number;
  stepMs: number;
}

export interface ProgressDisplay {
  /** Whether lines are redrawn in place (a terminal). */
  readonly interactive: boolean;
  update(progress: ProgressUpdate): void;
  /** Prints a line (above the progress lines on a terminal). */
  log(line: string): void;
  /** Leaves the last state on screen; later lines print normally. */
  stop(): void;
}

export interface ProgressDisplayOptions {
  /** Members and teachers, in the order their lines are shown. */
  workers: string[];
  epochs: number;
  /** Where plain lines and log lines go (stdout by default). */
  log?: (line: string) => void;
  /** Redraw in place; default: whether stdout is a terminal. */
  interactive?: boolean;
  /** Plain mode: at most one line per worker this often (default 10 s). */
  plainEveryMs?: number;
  stream?: NodeJS.WriteStream;
}

/** 3725000 ms -> '1h 02m'; 190000 -> '3m 10s'; 42000 -> '42s'. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.round(ms / 1000);
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** The fields of one worker's line, formatted. */
export function progressFields(p: ProgressUpdate, epochs: number) {
  const done = p.step + 1;
  return {
    epoch: `${p.epoch + 1}/${epochs}`,
    steps: `${done}/${p.totalSteps}`,
    ips: p.imagesPerSecond.toFixed(0),
    loss: p.loss === undefined ? '-' : p.loss.toFixed(4),
    acc: p.accuracy === undefined ? '-' : `${(100 * p.accuracy).toFixed(2)}%`,
    eta: formatDuration((p.totalSteps - done) * p.stepMs),
  };
}

export function createProgressDisplay(options: ProgressDisplayOptions): ProgressDisplay {
  const log = options.log ?? ((line: string) => console.log(line));
  const interactive = options.interactive ?? process.stdout.isTTY === true;
  return interactive ? terminalDisplay(options, log) : plainDisplay(options, log);
}

function plainDisplay(options: ProgressDisplayOptions, log: (line: string) => void): ProgressDisplay {
  const every = options.plainEveryMs ?? 10_000;
  const printed = new Map<string, number>();
  return {
    interactive: false,
    update(p) {
      const now = Date.now();
      const stepsPerEpoch = p.totalSteps / options.epochs;
      const epochEnd = Number.isInteger(stepsPerEpoch) && (p.step + 1) % stepsPerEpoch === 0;
      if (!epochEnd && now - (printed.get(p.worker) ?? -Infinity) < every) return;
      printed.set(p.worker, now);
      const f = progressFields(p, options.epochs);
      log(`progress ${p.worker}: epoch ${f.epoch} | step ${f.steps} | ${f.ips} img/s | loss ${f.loss} | accuracy ${f.acc} | ETA ${f.eta}`);
    },
    log,
    stop() {},
  };
}

function terminalDisplay(options: ProgressDisplayOptions, log: (line: string) => void): ProgressDisplay {
  const width = Math.max(...options.workers.map((w) => w.length));
  const bars = new cliProgress.MultiBar(
    {
      // (cli-progress has tokens of its own named eta, value and total: ours are named otherwise)
      format: `{worker} {bar} epoch {epoch} | step {steps} | {ips} img/s | loss {loss} | acc {acc} | ETA {remaining}`,
      barsize: 20,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      autopadding: true,
      ...(options.stream ? { stream: options.stream } : {}),
    },
    cliProgress.Presets.shades_classic,
  );
  const lines = new Map<string, cliProgress.SingleBar>();
  let stopped = false;
  const idle = { epoch: '-', steps: '-', ips: '-', loss: '-', acc: '-', remaining: '-' };
  const payload = (p: ProgressUpdate) => {
    const { eta, ...f } = progressFields(p, options.epochs);
    return { worker: p.worker.padEnd(width), ...f, remaining: eta };
  };
  return {
    interactive: true,
    update(p) {
      if (stopped) return;
      if (lines.size === 0) {
        // Every worker's line at once, in config order, so they never move.
        for (const w of options.workers) lines.set(w, bars.create(p.totalSteps, 0, { worker: w.padEnd(width), ...idle }));
      }
      lines.get(p.worker)?.update(p.step + 1, payload(p));
    },
    log(line) {
      if (stopped || lines.size === 0) log(line);
      else bars.log(`${line}\n`);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      // MultiBar prints logged lines at its next redraw, which stop() does not do: redraw first.
      (bars as unknown as { update(): void }).update();
      bars.stop();
    },
  };
}

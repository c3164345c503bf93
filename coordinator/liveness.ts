/**
 * Liveness, judged by when messages arrived: each worker's last message (heartbeats included),
 * the last message from anyone, and when the coordinator last sent its own heartbeats. Time is
 * always passed in (`now`, in ms), so the rules are tested with a made-up clock.
 */
export interface LivenessOptions {
  /** A worker silent this long is lost. */
  livenessMs: number;
  /** The coordinator's heartbeats go out this often. */
  heartbeatMs: number;
  /** No message from anyone this long: the run gives up. */
  timeoutMs: number;
}

export interface Silence {
  worker: string;
  silentMs: number;
}

export class Liveness {
  private readonly lastArrival = new Map<string, number>();
  private lastAny: number;
  private lastBeat: number;
  private lastLooked: number;
  /** Until when the coordinator is recovering from a stall of its own (unreachable peers are then not lost). */
  private excusedUntil = -Infinity;

  constructor(
    private readonly options: LivenessOptions,
    start: number,
  ) {
    this.lastAny = start;
    this.lastBeat = start;
    this.lastLooked = start;
  }

  /** A gap this long between two looks means the coordinator itself stalled (its loop, its process or its machine). */
  get stallMs(): number {
    return Math.max(2000, 2 * this.options.heartbeatMs);
  }

  /**
   * The coordinator looks at `now` (each turn of its loop). After a gap longer than stallMs it
   * was stalled itself: that gap is nobody's silence (every watched worker's silence is
   * shortened by it), and for livenessMs from now a worker it cannot reach is not lost (its
   * connection may be coming back). Returns the gap excused (0: none).
   */
  looked(now: number): number {
    const gap = now - this.lastLooked;
    this.lastLooked = now;
    if (gap <= this.stallMs) return 0;
    for (const [worker, at] of this.lastArrival) this.lastArrival.set(worker, Math.min(now, at + gap));
    this.lastAny = Math.min(now, this.lastAny + gap);
    if (!this.recovering(now)) this.excusedUntil = now + this.options.livenessMs;
    return gap;
  }

  /** Whether the coordinator is recovering from a stall of its own at `now` (see looked). */
  recovering(now: number): boolean {
    return now < this.excusedUntil;
  }

  /** A message arrived at `at`: from `worker` (a joined one), or from a peer not (yet) joined. */
  arrived(at: number, worker?: string): void {
    this.lastAny = at;
    if (worker !== undefined) this.lastArrival.set(worker, at);
  }

  /** A worker is watched from its admission on. */
  watch(worker: string, at: number): void {
    this.lastArrival.set(worker, at);
  }

  /** A lost (or finished) worker is no longer watched. */
  forget(worker: string): void {
    this.lastArrival.delete(worker);
  }

  /** The watched workers silent for longer than livenessMs at `now`, less those in `excused` (done). */
  silent(now: number, excused: ReadonlySet<string> = new Set()): Silence[] {
    const verdicts: Silence[] = [];
    for (const [worker, at] of this.lastArrival) {
      if (!excused.has(worker) && now - at > this.options.livenessMs) verdicts.push({ worker, silentMs: now - at });
    }
    return verdicts;
  }

  /** Whether the coordinator's heartbeats are due at `now`; when they are, they count as sent. */
  heartbeatDue(now: number): boolean {
    if (now - this.lastBeat < this.options.heartbeatMs) return false;
    this.lastBeat = now;
    return true;
  }

  /** Whether nothing at all has arrived for longer than timeoutMs at `now`. */
  stalled(now: number): boolean {
    return now - this.lastAny > this.options.timeoutMs;
  }
}

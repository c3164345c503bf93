/**
 * The coordinator's liveness, as a worker judges it: by when its last message arrived
 * (heartbeats included), on the main thread's socket or, read from `heardElsewhere`, on the
 * heartbeat thread's (which keeps receiving while the main thread computes). A coordinator whose
 * main thread is busy sends nothing, but its process still answers ZeroMQ's own pings (its I/O
 * thread): `linkAlive` is the last time that was known (the heartbeat thread's connection up,
 * its pings answered), which keeps the coordinator alive for up to `hangMs` after its last
 * message; a coordinator silent that long is hung, and lost whatever its connection says. Time
 * is passed in (`now`, in ms), so the rule is tested with a made-up clock.
 */
export class CoordinatorLiveness {
  private lastArrival: number;

  constructor(
    readonly livenessMs: number,
    start: number,
    private readonly heardElsewhere: () => number = () => 0,
    private readonly link: { alive: () => number; hangMs: number } = { alive: () => 0, hangMs: 0 },
  ) {
    this.lastArrival = start;
  }

  /** A message from the coordinator arrived at `at`. */
  arrived(at: number): void {
    this.lastArrival = Math.max(this.lastArrival, at);
  }

  /** The last sign of the coordinator: its last message on either socket, or its process answering pings (for at most hangMs after that message). */
  private last(): number {
    const heard = Math.max(this.lastArrival, this.heardElsewhere());
    return Math.max(heard, Math.min(this.link.alive(), heard + this.link.hangMs - this.livenessMs));
  }

  /** How long a receive at `now` may wait before the coordinator counts as lost (at least 1 ms). */
  waitMs(now: number): number {
    return Math.max(1, this.last() + this.livenessMs - now);
  }

  /** How long the coordinator has been silent at `now`. */
  silentMs(now: number): number {
    return now - this.last();
  }

  /** Whether the coordinator has been silent for longer than livenessMs at `now`. */
  lost(now: number): boolean {
    return this.silentMs(now) > this.livenessMs;
  }
}

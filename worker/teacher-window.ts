/** A teacher runs ahead of its students by at most `window` steps: the last step every student has finished, from the coordinator's advance messages. */
export class TeacherWindow {
  studentsDone = -1;

  constructor(readonly window: number) {}

  /** From global step `start` on: the students have finished step start - 1. */
  reset(start: number): void {
    this.studentsDone = start - 1;
  }

  /** The coordinator says every student has finished `step` (advances never move back). */
  advance(step: number): void {
    this.studentsDone = Math.max(this.studentsDone, step);
  }

  /** Whether the teacher may compute `step` now. */
  allows(step: number): boolean {
    return step <= this.studentsDone + this.window;
  }
}

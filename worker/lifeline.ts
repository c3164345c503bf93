/**
 * A worker's lifeline to its launcher (`cohort worker --lifeline`): its standard input is a pipe
 * the launcher holds open and never writes; it closes when the launcher ends, however it ends
 * (SIGKILL included), and the worker then exits at once. The stream is unreferenced: it does not
 * keep a finished worker alive.
 */
import type { Readable } from 'node:stream';

/** The exit code of a worker whose launcher is gone. */
export const EXIT_LAUNCHER_GONE = 1;

export function holdLifeline(input: Readable & { unref?: () => void }, log: (line: string) => void, exit: (code: number) => void = (code) => process.exit(code)): void {
  let gone = false;
  const end = () => {
    if (gone) return;
    gone = true;
    log('cohort worker: the launcher is gone (its lifeline on standard input closed); exiting');
    exit(EXIT_LAUNCHER_GONE);
  };
  input.on('data', () => {}); // read (and drop) whatever comes, to see the end
  input.once('end', end);
  input.once('close', end);
  input.once('error', end);
  input.unref?.();
}

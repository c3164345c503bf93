/**
 * The one error type users see: a message that names the problem and what to do about it.
 * Entry points print `cohort: <message>` for these and exit without a stack trace.
 */
export class CohortError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message);
    this.name = 'CohortError';
  }
}

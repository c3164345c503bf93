/**
 * The one error type users see: a message that names the problem and what to do about it.
 * Entry points print `cohort: <message>` for these and exit without a stack trace. `code` says
 * what kind of problem it is, for code that must tell errors apart (never the message text);
 * `cause` keeps the underlying error.
 */
export interface CohortErrorOptions {
  /** The kind of error, e.g. 'WEBGPU_NO_ADAPTER'. */
  code?: string;
  cause?: unknown;
  exitCode?: number;
}

export class CohortError extends Error {
  readonly code: string;
  readonly exitCode: number;

  constructor(message: string, options: CohortErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CohortError';
    this.code = options.code ?? 'COHORT_ERROR';
    this.exitCode = options.exitCode ?? 2;
  }
}

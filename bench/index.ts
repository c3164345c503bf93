/**
 * `npm run bench -- <name>`: the project's benchmarks. Speed is measured here, never in tests.
 */
import { writeFileSync } from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { benchStep } from './step.js';

await yargs(hideBin(process.argv))
  .scriptName('npm run bench --')
  .command(
    'step',
    'time one training step of the reference CNN on every installed backend and in PyTorch',
    (y) =>
      y
        .option('steps', { type: 'number', default: 20, describe: 'timed steps per measurement (median reported)' })
        .option('warmup', { type: 'number', default: 3 })
        .option('cpu-steps', { type: 'number', default: 2, describe: 'timed steps for the pure-JS cpu backend (over a minute each)' })
        .option('rounds', { type: 'number', default: 2, describe: 'alternate PyTorch and tfjs this many times' })
        .option('backends', { type: 'string', describe: 'comma-separated subset of tensorflow-gpu,tensorflow,wasm,cpu' })
        .option('torch-threads', { type: 'number', default: 2 })
        .option('profile', { type: 'boolean', default: false, describe: 'also print the kernel time breakdown' })
        .option('json', { type: 'string', describe: 'also write the results to this JSON file' }),
    async (args) => {
      const results = await benchStep(
        {
          steps: args.steps,
          warmup: args.warmup,
          cpuSteps: args['cpu-steps'],
          rounds: args.rounds,
          backends: args.backends?.split(',').map((s) => s.trim()),
          torchThreads: args['torch-threads'],
          profile: args.profile,
        },
        (line) => console.log(line),
      );
      if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
    },
  )
  .demandCommand(1)
  .strict()
  .help()
  .parseAsync();

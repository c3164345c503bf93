/**
 * `npm run bench -- <name>`: the project's benchmarks. Speed is measured here, never in tests.
 */
import { writeFileSync } from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { benchData } from './data.js';
import { benchExchange, parseShapes } from './exchange.js';
import { benchGpuStep, benchStep } from './step.js';
import { benchTeacher } from './teacher.js';

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
        .option('backend', { type: 'string', choices: ['webgpu'], describe: 'webgpu: the GPU cases (reference CNN, ResNet-18 at 32 and 224) beside PyTorch on the same GPU' })
        .option('cases', { type: 'string', describe: 'with --backend webgpu: comma-separated subset of refcnn128,resnet18s64,resnet18i64' })
        .option('torch-threads', { type: 'number', default: 2 })
        .option('profile', { type: 'boolean', default: false, describe: 'also print the kernel time breakdown' })
        .option('json', { type: 'string', describe: 'also write the results to this JSON file' }),
    async (args) => {
      const options = {
        steps: args.steps,
        warmup: args.warmup,
        cpuSteps: args['cpu-steps'],
        rounds: args.rounds,
        torchThreads: args['torch-threads'],
        profile: args.profile,
      };
      if (args.backend === 'webgpu') {
        const results = await benchGpuStep({ ...options, cases: args.cases?.split(',').map((s) => s.trim()) }, (line) => console.log(line));
        if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
        return;
      }
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
  .command(
    'data',
    'images/s of the image-folder loader (decode, random-resized-crop, flip, normalise) on the main thread and in worker pools',
    (y) =>
      y
        .option('images', { type: 'number', default: 128, describe: 'JPEGs to generate (once, in the cache) and read per epoch' })
        .option('width', { type: 'number', default: 500 })
        .option('height', { type: 'number', default: 375 })
        .option('size', { type: 'number', default: 224, describe: 'output side of the random-resized crop' })
        .option('batch-size', { type: 'number', default: 32 })
        .option('rounds', { type: 'number', default: 5, describe: 'one timed epoch per mode per round (median reported)' })
        .option('threads', { type: 'string', default: '0,1,2', describe: 'comma-separated pool sizes; 0 is the main thread' })
        .option('prefetch', { type: 'number', default: 4 })
        .option('decode-concurrency', { type: 'number', default: 2, describe: 'images of one batch decoded at the same time' })
        .option('busy-ms', { type: 'number', default: 0, describe: 'block the main thread this long per batch, like a training step' })
        .option('dir', { type: 'string', describe: 'folder for the generated images (default: the cohort cache)' })
        .option('json', { type: 'string', describe: 'also write the results to this JSON file' }),
    async (args) => {
      const results = await benchData(
        {
          images: args.images,
          width: args.width,
          height: args.height,
          size: args.size,
          batchSize: args['batch-size'],
          rounds: args.rounds,
          threads: args.threads.split(',').map((s) => Number(s.trim())),
          prefetch: args.prefetch,
          decodeConcurrency: args['decode-concurrency'],
          busyMs: args['busy-ms'],
          dir: args.dir,
        },
        (line) => console.log(line),
      );
      if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
    },
  )
  .command(
    'exchange',
    "the coordinator's per-step logits exchange for cohorts of K members beside raw ZeroMQ moving the same bytes, and its share of a reference CNN step",
    (y) =>
      y
        .option('sizes', { type: 'string', default: '2,4,8,16', describe: 'comma-separated cohort sizes K' })
        .option('shapes', { type: 'string', default: '128x10,256x1000', describe: 'comma-separated logits shapes BATCHxCLASSES' })
        .option('steps', { type: 'number', default: 200, describe: 'timed steps per configuration and path (median and p90 reported)' })
        .option('big-steps', { type: 'number', default: 200, describe: 'timed steps instead where the logits of a step exceed 1 MiB (the 256x1000 rows)' })
        .option('warmup', { type: 'number', default: 10 })
        .option('sleep-ms', { type: 'number', default: 0, describe: 'synthetic compute: the members sleep this long before every step (all K at once, in their process)' })
        .option('step-ms', { type: 'number', describe: 'the reference CNN step time in ms (default: measured on wasm in this run)' })
        .option('cnn-steps', { type: 'number', default: 10, describe: 'timed steps when measuring the reference CNN step' })
        .option('json', { type: 'string', describe: 'also write the results to this JSON file' }),
    async (args) => {
      const results = await benchExchange(
        {
          sizes: args.sizes.split(',').map((s) => Number(s.trim())),
          shapes: parseShapes(args.shapes),
          steps: args.steps,
          bigSteps: args['big-steps'],
          warmup: args.warmup,
          sleepMs: args['sleep-ms'],
          stepMs: args['step-ms'],
          cnnSteps: args['cnn-steps'],
        },
        (line) => console.log(line),
      );
      if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
    },
  )
  .command(
    'teacher',
    'one ResNet-50 forward pass as a CPU teacher: Cohort on wasm, onnxruntime-node (CPU provider) and PyTorch, side by side',
    (y) =>
      y
        .option('batch', { type: 'number', default: 32 })
        .option('size', { type: 'number', default: 224 })
        .option('reps', { type: 'number', default: 3, describe: 'timed passes per teacher (median reported)' })
        .option('warmup', { type: 'number', default: 1 })
        .option('torch-threads', { type: 'number', default: 2 })
        .option('json', { type: 'string', describe: 'also write the results to this JSON file' }),
    async (args) => {
      const results = await benchTeacher({ batch: args.batch, size: args.size, reps: args.reps, warmup: args.warmup, torchThreads: args['torch-threads'] }, (line) =>
        console.log(line),
      );
      if (args.json) writeFileSync(args.json, JSON.stringify(results, null, 2));
    },
  )
  .demandCommand(1)
  .strict()
  .help()
  .parseAsync();

/**
 * The container images (deploy/docker/*.Dockerfile), checked without a Docker engine: each
 * Dockerfile is parsed with dockerfile-ast (the parser of the VS Code Docker extension) and we
 * assert the base images (the GPU image on CUDA 11.2 + cuDNN 8, which libtensorflow 2.9.1 of
 * tfjs-node-gpu 4.22.0 needs; Node 20, which package.json asks for), that `cohort` (the
 * package's bin) is the entry point, how npm installs (optional dependencies in the GPU image,
 * with a check that tfjs-node-gpu really got its library), a non-root numeric USER, and that
 * every COPY source exists in the repository, is not filtered out by the image's
 * .dockerignore, and that together they hold every file the CLI imports (the build compiles
 * them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { DockerfileParser, type Dockerfile, type Instruction } from 'dockerfile-ast';
import { ROOT } from './helpers/cli.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; engines: { node: string }; optionalDependencies: Record<string, string> };

interface Stage {
  name: string | null;
  base: string;
  instructions: Instruction[];
}

interface Image {
  file: string;
  dockerfile: Dockerfile;
  stages: Stage[];
  /** The global ARGs (before the first FROM) and their defaults. */
  args: Map<string, string>;
}

function parse(file: string): Image {
  const dockerfile = DockerfileParser.parse(readFileSync(join(ROOT, file), 'utf8'));
  const args = new Map(dockerfile.getInitialARGs().map((a) => [a.getProperty()!.getName(), a.getProperty()!.getValue() ?? '']));
  const expand = (text: string) => text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => args.get((a ?? b)!) ?? '');
  const stages: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const from = dockerfile.getFROMs().find((f) => f.getRange().start.line === instruction.getRange().start.line)!;
      stages.push({ name: from.getBuildStage(), base: expand(from.getArguments()[0].getValue()), instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push(instruction);
    }
  }
  return { file, dockerfile, stages, args };
}

const words = (i: Instruction) => i.getArguments().map((a) => a.getValue());
const runs = (stage: Stage) => stage.instructions.filter((i) => i.getKeyword() === 'RUN').map((i) => words(i).join(' '));
const jsonForm = (i: Instruction) => (i as unknown as { getJSONStrings(): { getJSONValue(): string }[] }).getJSONStrings().map((s) => s.getJSONValue());
const flags = (i: Instruction) => (i as unknown as { getFlags(): { getName(): string; getValue(): string | null }[] }).getFlags().map((f) => [f.getName(), f.getValue()] as const);

const gpu = parse('deploy/docker/gpu.Dockerfile');
const cpu = parse('deploy/docker/cpu.Dockerfile');

test('the GPU image: CUDA 11.2 with cuDNN 8 for tfjs-node-gpu 4.22.0 (libtensorflow 2.9.1), Node.js 20', () => {
  // The CUDA and cuDNN versions follow from these two pins; a change here means re-checking them.
  assert.equal(pkg.optionalDependencies['@tensorflow/tfjs-node-gpu'], '4.22.0');
  assert.equal(pkg.optionalDependencies['@tensorflow/tfjs-node'], '4.22.0');
  assert.equal(gpu.args.get('CUDA_IMAGE'), 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04');
  assert.equal(gpu.args.get('NODE_IMAGE'), 'node:20-bookworm-slim');
  assert.deepEqual(
    gpu.stages.map((s) => [s.name, s.base]),
    [
      ['node', 'node:20-bookworm-slim'],
      ['build', 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04'],
      // Built and run on the same base: native modules see the same glibc and CUDA libraries.
      [null, 'nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04'],
    ],
  );
  const [, cudaTag] = gpu.args.get('CUDA_IMAGE')!.split(':');
  assert.match(cudaTag, /^11\.2\.\d+-cudnn8-runtime-/);
  // package.json's engines: Node >= 20.
  assert.equal(pkg.engines.node, '>=20');
  // Node.js comes from the node stage into both CUDA stages.
  for (const stage of gpu.stages.slice(1)) {
    const copies = stage.instructions.filter((i) => i.getKeyword() === 'COPY' && flags(i).some(([n, v]) => n === 'from' && v === 'node'));
    assert.ok(copies.some((c) => words(c)[0] === '/usr/local/bin/node'), `${stage.name ?? 'final'} stage gets node from the node stage`);
  }
});

test('the GPU image: npm ci with the optional dependencies, and a check that tfjs-node-gpu got libtensorflow 2.9.1 and its binding', () => {
  const install = runs(gpu.stages[1]).find((r) => r.includes('npm ci'));
  assert.ok(install, 'the build stage runs npm ci');
  assert.match(install, /npm ci --include=optional/);
  assert.doesNotMatch(install, /--omit=optional|--no-optional|--ignore-scripts/);
  // npm skips an optional package whose install script fails: the build must stop instead.
  assert.match(install, /&& test -f node_modules\/@tensorflow\/tfjs-node-gpu\/deps\/lib\/libtensorflow\.so\.2\.9\.1 &&/);
  assert.match(install, /&& ls node_modules\/@tensorflow\/tfjs-node-gpu\/lib\/napi-v\*\/tfjs_binding\.node &&/);
  assert.match(install, /npm prune --omit=dev/);
  assert.ok(install.indexOf('npm ci') < install.indexOf('npm prune'), 'dev dependencies (TypeScript) are dropped only after the build');
});

test('the CPU image: Node.js 20, tfjs-node (optional, by build argument) and never the GPU library', () => {
  assert.equal(cpu.args.get('NODE_IMAGE'), 'node:20-bookworm-slim');
  assert.deepEqual(cpu.stages.map((s) => [s.name, s.base]), [['build', 'node:20-bookworm-slim'], [null, 'node:20-bookworm-slim']]);
  const install = runs(cpu.stages[0]).find((r) => r.includes('npm ci'))!;
  assert.match(install, /npm ci --include=optional --ignore-scripts/);
  assert.match(install, /npm rebuild @tensorflow\/tfjs-node && test -f node_modules\/@tensorflow\/tfjs-node\/deps\/lib\/libtensorflow\.so\.2\.9\.1/);
  assert.match(install, /npm run build/);
  assert.match(install, /rm -rf node_modules\/@tensorflow\/tfjs-node-gpu/);
  const arg = cpu.stages[0].instructions.find((i) => i.getKeyword() === 'ARG' && words(i)[0].startsWith('TFJS_NODE='));
  assert.equal(arg && words(arg)[0], 'TFJS_NODE=true');
});

for (const image of [gpu, cpu]) {
  const final = image.stages.at(-1)!;

  test(`${image.file}: the entry point is cohort (the package's bin), under tini, as a non-root user`, () => {
    const entrypoints = final.instructions.filter((i) => i.getKeyword() === 'ENTRYPOINT');
    assert.equal(entrypoints.length, 1);
    assert.deepEqual(jsonForm(entrypoints[0]), ['/usr/bin/tini', '--', 'cohort'], 'exec form: signals reach cohort');
    const cmd = final.instructions.find((i) => i.getKeyword() === 'CMD');
    assert.deepEqual(cmd && jsonForm(cmd), ['--help']);
    // `cohort` on the PATH is the package's bin.
    assert.equal(pkg.bin.cohort, 'dist/cli.js');
    assert.ok(runs(final).some((r) => r.includes('ln -s /app/dist/cli.js /usr/local/bin/cohort')), 'cohort links to /app/dist/cli.js');
    assert.ok(runs(final).some((r) => /install .*\btini\b/.test(r)), 'tini is installed');
    assert.ok(final.instructions.some((i) => i.getKeyword() === 'COPY' && words(i)[0] === '/app' && flags(i).some(([n, v]) => n === 'from' && v === 'build')));
    // A numeric, non-root USER (Kubernetes' runAsNonRoot can check a number), created in the image.
    const users = final.instructions.filter((i) => i.getKeyword() === 'USER');
    assert.ok(users.length > 0, 'the final stage sets USER');
    const user = words(users.at(-1)!)[0];
    assert.match(user, /^\d+:\d+$/);
    const [uid, gid] = user.split(':').map(Number);
    assert.ok(uid > 0 && gid > 0, `USER ${user} is not root`);
    assert.ok(runs(final).some((r) => r.includes(`useradd --uid ${uid} `) && r.includes(`groupadd --gid ${gid} `)), `user ${uid} and group ${gid} exist in the image`);
    const userAt = final.instructions.indexOf(users.at(-1)!);
    assert.ok(final.instructions.slice(userAt).every((i) => i.getKeyword() !== 'RUN'), 'nothing runs as root after USER');
  });

  test(`${image.file}: every COPY source exists, passes the .dockerignore, and the copies hold every file the CLI imports`, () => {
    const ignoreFile = join(ROOT, `${image.file}.dockerignore`);
    assert.ok(existsSync(ignoreFile), `${image.file}.dockerignore exists`);
    const ignored = readFileSync(ignoreFile, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const isIgnored = (path: string) => ignored.some((pattern) => matchIgnore(pattern, path));
    const sources: string[] = [];
    for (const stage of image.stages) {
      for (const copy of stage.instructions.filter((i) => i.getKeyword() === 'COPY' && !flags(i).some(([n]) => n === 'from'))) {
        const args = words(copy);
        for (const source of args.slice(0, -1)) {
          const matches = source.includes('*') ? glob(source) : existsSync(join(ROOT, source)) ? [source] : [];
          assert.ok(matches.length > 0, `COPY ${source}: not in the repository`);
          for (const m of matches) assert.ok(!isIgnored(m), `COPY ${m} is excluded by the .dockerignore`);
          sources.push(...matches);
        }
      }
    }
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json']) assert.ok(sources.includes(needed), `${needed} is copied`);
    // tsconfig.json's include list is copied (the build compiles it) ...
    const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[] };
    const covered = (file: string) => sources.some((s) => file === s || file.startsWith(`${s}/`));
    for (const entry of tsconfig.include) assert.ok(covered(entry.replace(/\/\*\*\/\*\.ts$/, '')), `tsconfig include ${entry} is copied`);
    // ... and so is every module reachable from the CLI and the library root.
    const reached = importClosure(['cli.ts', 'index.ts']);
    assert.ok(reached.size > 50, `followed ${reached.size} modules`);
    assert.ok(reached.has('report/index.ts') && reached.has('coordinator/launch-ssh.ts'), 'dynamic imports are followed');
    const missing = [...reached].filter((f) => !covered(f));
    assert.deepEqual(missing, [], 'modules the image would not have');
  });
}

/** A .dockerignore pattern (the forms used: a path, **\/name, *.ext) against a context path. */
function matchIgnore(pattern: string, path: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(?:.*/)?').replace(/\*/g, '[^/]*')}(?:/.*)?$`);
  return re.test(path);
}

/** `dir/*.ext` in the repository. */
function glob(pattern: string): string[] {
  const dir = dirname(pattern);
  const re = new RegExp(`^${pattern.slice(dir.length + 1).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
  return readdirSync(join(ROOT, dir)).filter((f) => re.test(f)).map((f) => `${dir}/${f}`);
}

/** Every .ts file reachable through relative static and dynamic imports, as repository paths. */
function importClosure(entries: string[]): Set<string> {
  const seen = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(join(ROOT, file), 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)) {
      const target = relative(ROOT, join(ROOT, dirname(file), m[1])).replace(/\.js$/, '.ts');
      assert.ok(existsSync(join(ROOT, target)) && statSync(join(ROOT, target)).isFile(), `${file} imports ${m[1]}: no ${target}`);
      queue.push(target);
    }
  }
  return seen;
}

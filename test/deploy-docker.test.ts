/**
 * The container images (deploy/docker/*.Dockerfile), checked without a Docker engine: each
 * Dockerfile is parsed with dockerfile-ast (the parser of the VS Code Docker extension) and we
 * assert the base images (the CUDA 11 GPU image on CUDA 11.2 + cuDNN 8, which libtensorflow
 * 2.9.1 of tfjs-node-gpu 4.22.0 needs; the WebGPU image on Debian with the Vulkan loader and
 * nothing of CUDA, asking the NVIDIA container toolkit for the driver's Vulkan files; Node 20,
 * which package.json asks for), that `cohort` (the package's bin) is the entry point, how npm
 * installs (optional dependencies in the CUDA 11 image, with a check that tfjs-node-gpu really
 * got its library; install scripts off in the others, with a check that Dawn's binding is
 * there and loads in the WebGPU image), a non-root numeric USER, and that
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

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
  engines: { node: string };
  dependencies: Record<string, string>;
  optionalDependencies: Record<string, string>;
};

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
const envs = (stage: Stage) =>
  new Map(
    stage.instructions
      .filter((i) => i.getKeyword() === 'ENV')
      .flatMap((i) =>
        (i as unknown as { getProperties(): { getName(): string; getValue(): string | null }[] }).getProperties().map((p) => [p.getName(), p.getValue() ?? ''] as const),
      ),
  );
/** The packages of the stage's `apt-get install` commands. */
const aptPackages = (stage: Stage) =>
  runs(stage).flatMap((r) => [...r.matchAll(/apt-get install((?: -\S+)*)((?: [a-z0-9][a-z0-9.+-]*)+)/g)].flatMap((m) => m[2].trim().split(' ')));
const flags = (i: Instruction) => (i as unknown as { getFlags(): { getName(): string; getValue(): string | null }[] }).getFlags().map((f) => [f.getName(), f.getValue()] as const);

const gpu = parse('deploy/docker/gpu.Dockerfile');
const cpu = parse('deploy/docker/cpu.Dockerfile');
const webgpu = parse('deploy/docker/webgpu.Dockerfile');

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
    assert.ok(
      copies.some((c) => words(c)[0] === '/usr/local/bin/node'),
      `${stage.name ?? 'final'} stage gets node from the node stage`,
    );
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
  assert.deepEqual(
    cpu.stages.map((s) => [s.name, s.base]),
    [
      ['build', 'node:20-bookworm-slim'],
      [null, 'node:20-bookworm-slim'],
    ],
  );
  const install = runs(cpu.stages[0]).find((r) => r.includes('npm ci'))!;
  assert.match(install, /npm ci --include=optional --ignore-scripts/);
  assert.match(install, /npm rebuild @tensorflow\/tfjs-node && test -f node_modules\/@tensorflow\/tfjs-node\/deps\/lib\/libtensorflow\.so\.2\.9\.1/);
  assert.match(install, /npm run build/);
  assert.match(install, /rm -rf node_modules\/@tensorflow\/tfjs-node-gpu/);
  const arg = cpu.stages[0].instructions.find((i) => i.getKeyword() === 'ARG' && words(i)[0].startsWith('TFJS_NODE='));
  assert.equal(arg && words(arg)[0], 'TFJS_NODE=true');
});

test("the WebGPU image: Node.js 20 on Debian bookworm with the Vulkan loader, nothing of CUDA, and the driver's Vulkan files asked of the NVIDIA container toolkit", () => {
  assert.equal(webgpu.args.get('NODE_IMAGE'), 'node:20-bookworm-slim');
  assert.deepEqual(
    webgpu.stages.map((s) => [s.name, s.base]),
    [
      ['build', 'node:20-bookworm-slim'],
      [null, 'node:20-bookworm-slim'],
    ],
  );
  assert.ok(!webgpu.args.has('CUDA_IMAGE'));
  for (const stage of webgpu.stages) {
    assert.doesNotMatch(stage.base, /cuda|nvidia/i, 'no CUDA base image');
    for (const p of aptPackages(stage)) assert.doesNotMatch(p, /cuda|cudnn|nvidia|tensorrt/i, `apt package ${p}`);
  }
  // The two packages the backend needs are regular dependencies: `npm ci` always installs them.
  for (const name of ['webgpu', '@tensorflow/tfjs-backend-webgpu']) {
    assert.ok(pkg.dependencies[name], `${name} is a dependency`);
    assert.equal(pkg.optionalDependencies[name], undefined, `${name} is not optional`);
  }
  const final = webgpu.stages.at(-1)!;
  const packages = aptPackages(final);
  assert.ok(packages.includes('libvulkan1'), 'the Vulkan loader, which Dawn opens');
  assert.ok(packages.includes('tini'));
  // What the NVIDIA driver's Vulkan library (libGLX_nvidia.so.0, from the host) links against.
  for (const p of ['libglvnd0', 'libx11-6', 'libxext6']) assert.ok(packages.includes(p), `${p} is installed`);
  // The toolkit mounts the driver's Vulkan ICD only for the graphics capability.
  const env = envs(final);
  const capabilities = (env.get('NVIDIA_DRIVER_CAPABILITIES') ?? '').split(',');
  for (const c of ['graphics', 'compute', 'utility']) assert.ok(capabilities.includes(c), `NVIDIA_DRIVER_CAPABILITIES has ${c}: ${capabilities.join(',')}`);
  assert.equal(env.get('NVIDIA_VISIBLE_DEVICES'), 'all');
  assert.equal(env.get('NODE_ENV'), 'production');
  assert.equal(env.get('COHORT_CACHE_DIR'), envs(cpu.stages.at(-1)!).get('COHORT_CACHE_DIR'));
  // The same user as the CUDA 11 image: one securityContext fits the workers on either.
  const user = (image: Image) =>
    words(
      image.stages
        .at(-1)!
        .instructions.filter((i) => i.getKeyword() === 'USER')
        .at(-1)!,
    )[0];
  assert.equal(user(webgpu), user(gpu));
});

test("the WebGPU image: npm ci from the registry alone (install scripts off), Dawn's binding checked, no libtensorflow", () => {
  const install = runs(webgpu.stages[0]).find((r) => r.includes('npm ci'));
  assert.ok(install, 'the build stage runs npm ci');
  assert.match(install, /npm ci --include=optional --ignore-scripts/);
  assert.doesNotMatch(install, /npm rebuild|TFJS_NODE/, 'no install script downloads libtensorflow');
  assert.ok(!webgpu.stages[0].instructions.some((i) => i.getKeyword() === 'ARG' && /^TFJS_NODE/.test(words(i)[0])), 'no tfjs-node mirror to point at');
  // Dawn's binding for the build's platform, where the webgpu package loads it from, and it loads.
  assert.match(install, /&& test -f "node_modules\/webgpu\/dist\/linux-\$\(node -p process\.arch\)\/dawn\.node" &&/);
  assert.match(readFileSync(join(ROOT, 'node_modules', 'webgpu', 'index.js'), 'utf8'), /join\(__dirname, 'dist', `\$\{process\.platform\}-\$\{arch\}`, 'dawn\.node'\)/);
  if (process.platform === 'linux') assert.ok(existsSync(join(ROOT, 'node_modules', 'webgpu', 'dist', `linux-${process.arch}`, 'dawn.node')));
  assert.match(install, /&& node -e "import\('webgpu'\)/);
  // Built with the dev dependencies, then pruned; neither tfjs-node package stays (without their
  // install scripts they have no libtensorflow, and `auto` would try tfjs-node-gpu on a GPU).
  assert.ok(install.indexOf('npm run build') < install.indexOf('npm prune --omit=dev'));
  assert.match(install, /rm -rf node_modules\/@tensorflow\/tfjs-node-gpu node_modules\/@tensorflow\/tfjs-node( |$)/);
  // Only this platform's binding is kept.
  assert.match(install, /find node_modules\/webgpu\/dist -mindepth 1 -maxdepth 1 ! -name "linux-\$\(node -p process\.arch\)" -exec rm -rf \{\} \+/);
});

test('deploy/docker/README.md names every image and says when each GPU image fits', () => {
  const readme = readFileSync(join(ROOT, 'deploy', 'docker', 'README.md'), 'utf8');
  for (const file of readdirSync(join(ROOT, 'deploy', 'docker')).filter((f) => f.endsWith('.Dockerfile')))
    assert.ok(readme.includes(`deploy/docker/${file}`), `README names ${file}`);
  assert.match(readme, /NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics/);
  assert.match(readme, /VK_DRIVER_FILES/);
  assert.match(readme, /vulkaninfo/);
});

for (const image of [gpu, cpu, webgpu]) {
  const final = image.stages.at(-1)!;

  test(`${image.file}: the entry point is cohort (the package's bin), under tini, as a non-root user`, () => {
    const entrypoints = final.instructions.filter((i) => i.getKeyword() === 'ENTRYPOINT');
    assert.equal(entrypoints.length, 1);
    assert.deepEqual(jsonForm(entrypoints[0]), ['/usr/bin/tini', '--', 'cohort'], 'exec form: signals reach cohort');
    const cmd = final.instructions.find((i) => i.getKeyword() === 'CMD');
    assert.deepEqual(cmd && jsonForm(cmd), ['--help']);
    // `cohort` on the PATH is the package's bin.
    assert.equal(pkg.bin.cohort, 'dist/cli.js');
    assert.ok(
      runs(final).some((r) => r.includes('ln -s /app/dist/cli.js /usr/local/bin/cohort')),
      'cohort links to /app/dist/cli.js',
    );
    assert.ok(
      runs(final).some((r) => /install .*\btini\b/.test(r)),
      'tini is installed',
    );
    assert.ok(final.instructions.some((i) => i.getKeyword() === 'COPY' && words(i)[0] === '/app' && flags(i).some(([n, v]) => n === 'from' && v === 'build')));
    // A numeric, non-root USER (Kubernetes' runAsNonRoot can check a number), created in the image.
    const users = final.instructions.filter((i) => i.getKeyword() === 'USER');
    assert.ok(users.length > 0, 'the final stage sets USER');
    const user = words(users.at(-1)!)[0];
    assert.match(user, /^\d+:\d+$/);
    const [uid, gid] = user.split(':').map(Number);
    assert.ok(uid > 0 && gid > 0, `USER ${user} is not root`);
    assert.ok(
      runs(final).some((r) => r.includes(`useradd --uid ${uid} `) && r.includes(`groupadd --gid ${gid} `)),
      `user ${uid} and group ${gid} exist in the image`,
    );
    const userAt = final.instructions.indexOf(users.at(-1)!);
    assert.ok(
      final.instructions.slice(userAt).every((i) => i.getKeyword() !== 'RUN'),
      'nothing runs as root after USER',
    );
  });

  test(`${image.file}: every COPY source exists, passes the .dockerignore, and the copies hold every file the CLI imports`, () => {
    const ignoreFile = join(ROOT, `${image.file}.dockerignore`);
    assert.ok(existsSync(ignoreFile), `${image.file}.dockerignore exists`);
    const ignored = readFileSync(ignoreFile, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
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
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*\*\//g, '(?:.*/)?')
      .replace(/\*/g, '[^/]*')}(?:/.*)?$`,
  );
  return re.test(path);
}

/** `dir/*.ext` in the repository. */
function glob(pattern: string): string[] {
  const dir = dirname(pattern);
  const re = new RegExp(
    `^${pattern
      .slice(dir.length + 1)
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '[^/]*')}$`,
  );
  return readdirSync(join(ROOT, dir))
    .filter((f) => re.test(f))
    .map((f) => `${dir}/${f}`);
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

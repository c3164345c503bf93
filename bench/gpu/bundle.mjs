/* global process, console */
// `node bench/gpu/bundle.mjs [DIR]` (default .gpu-bundle): what a GPU machine with no Node.js
// packages and no network needs to run the webgpu step benchmark and the webgpu correctness
// tests, as single files (esbuild), small enough for the device tool's 64 MiB carry:
//   DIR/bench.mjs            npm run bench (the `step --backend webgpu` benchmark, and the rest)
//   DIR/step-worker.mjs      the benchmark's timed process
//   DIR/webgpu-probe.mjs     the adapter probe (shared/engine/webgpu-probe.ts)
//   DIR/webgpu.test.mjs      test/webgpu.test.ts (with COHORT_WEBGPU_TEST_HARDWARE=1: on the hardware adapter)
//   DIR/*.py                 PyTorch's side of the benchmark
//   DIR/run.sh               the one script to run there (see its comment)
// Dawn's binding is not bundled: it is loaded from $DAWN_NODE (../shared/gpu-probe/prepare-carry.sh
// brings it, with Node itself and the Vulkan loader, and its setup.sh sets DAWN_NODE).
import { build } from 'esbuild';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = resolve(process.argv[2] ?? join(root, '.gpu-bundle'));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

/** The `webgpu` package finds dawn.node beside itself; bundled, it takes $DAWN_NODE. */
const dawnFromEnvironment = {
  name: 'dawn-from-environment',
  setup(b) {
    b.onLoad({ filter: /node_modules[\\/]webgpu[\\/]index\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      const patched = source.replace(
        /const dawnNodePath = [^;]+;/,
        "const dawnNodePath = process.env.DAWN_NODE ?? (() => { throw new Error('DAWN_NODE is not set: the path of dawn.node (see ../shared/gpu-probe)'); })();",
      );
      if (patched === source) throw new Error(`${args.path}: the dawn.node path line was not found; update bench/gpu/bundle.mjs`);
      return { contents: patched, loader: 'js' };
    });
  },
};

/** Native packages the GPU run never calls (sockets, image decoding, thread pools): a stub that fails only where used. */
const NOT_BUNDLED = ['zeromq', 'sharp', 'piscina'];
const stubNative = {
  name: 'stub-native',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${NOT_BUNDLED.join('|')})$`) }, (args) => ({ path: args.path, namespace: 'not-bundled' }));
    b.onLoad({ filter: /.*/, namespace: 'not-bundled' }, (args) => ({
      contents: `module.exports = new Proxy({}, { get(_, key) { if (key === '__esModule' || typeof key === 'symbol') return undefined; throw new Error(${JSON.stringify(`${args.path} is not in the GPU bundle (bench/gpu/bundle.mjs)`)}); } });`,
      loader: 'js',
    }));
  },
};

await build({
  entryPoints: {
    bench: join(root, 'bench/index.ts'),
    'step-worker': join(root, 'bench/step-worker.ts'),
    'webgpu-probe': join(root, 'shared/engine/webgpu-probe.ts'),
    'webgpu.test': join(root, 'test/webgpu.test.ts'),
  },
  outdir: out,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Backends and packages the GPU run does not use (native addons, or downloads at install).
  external: ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'onnxruntime-node'],
  banner: { js: "import { createRequire as __cohortRequire } from 'node:module'; const require = __cohortRequire(import.meta.url);" },
  plugins: [dawnFromEnvironment, stubNative],
  // tfjs' backend packages register themselves on import, yet say they have no side effects.
  ignoreAnnotations: true,
  logLevel: 'warning',
});
for (const py of ['torch_gpu_step.py', 'torch_step.py', 'torch_teacher.py']) copyFileSync(join(root, 'bench', py), join(out, py));
writeFileSync(
  join(out, 'run.sh'),
  `#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu-carry (prepare-carry.sh) and this folder carried:
#   bash ${relative(out)}/run.sh
# Writes its figures to \${OUT:-/tmp}: bench.json, bench.txt, webgpu-test.txt.
set -uo pipefail
HERE=$(cd "$(dirname "\${BASH_SOURCE[0]}")" && pwd)
. .gpu-carry/setup.sh
OUT=\${OUT:-/tmp}
node --version; vulkaninfo --summary 2>/dev/null | head -20 || true
node "$HERE/bench.mjs" step --backend webgpu --profile --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt"
COHORT_WEBGPU_TEST_HARDWARE=1 node --test --test-reporter=spec "$HERE/webgpu.test.mjs" 2>&1 | tee "$OUT/webgpu-test.txt" | tail -40
`,
);
chmodSync(join(out, 'run.sh'), 0o755);
function relative(p) {
  return p.startsWith(root) ? p.slice(root.length + 1) : p;
}
console.log(`bundle in ${out}`);

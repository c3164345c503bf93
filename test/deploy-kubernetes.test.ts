/**
 * The Kubernetes manifests (deploy/kubernetes), checked without a cluster:
 * - every object of kustomization.yaml's resources validates (ajv) against the part of the
 *   Kubernetes OpenAPI schema written down below for the fields we use (apps/v1 Deployment,
 *   v1 Service, batch/v1 Job, v1 PersistentVolumeClaim, and the Kustomization), closed to
 *   unknown fields so that a misspelt key fails;
 * - the references between them hold: volume mounts name volumes of their pod, Secrets and the
 *   ConfigMap come from the kustomization's generators, the PVC exists and is ReadWriteMany,
 *   the Service selects the coordinator's pods and targets its port, the workers connect to the
 *   Service, each worker pod has one GPU, the Job has one completion per member and teacher of
 *   run.yaml and retries each at most recovery.maxRestarts times, the pods run as the images'
 *   user; the workers run `--backend webgpu` on the WebGPU image with the `graphics` driver
 *   capability, and the overlay deploy/kubernetes-cuda11 turns them into tensorflow-gpu workers on
 *   the CUDA 11 image (its image and patch applied as kustomize would, the result validated
 *   again);
 * - the args given to `cohort` exist in the real CLI's `--help`, `cohort keys` writes the
 *   files the Secret generators read and each half loads as the coordinator's / a worker's
 *   keys, the coordinator's wrapper script adds --resume exactly when a complete checkpoint
 *   exists and idles after a completed run (run with a stand-in `cohort`), and
 *   the Job's own worker args (env references resolved) join as the N-th worker (a real worker
 *   process against a bare ZeroMQ ROUTER).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { EXIT_STOPPED } from '../coordinator/stop.js';
import { parseAllDocuments } from 'yaml';
import { Router } from 'zeromq';
import { loadRunConfig, runDirectory } from '../shared/config/run-config.js';
import { BACKEND_CHOICES } from '../shared/engine/backend.js';
import { decodeMessage } from '../shared/protocol/codec.js';
import { generateKeys, loadCoordinatorKeys, loadWorkerKeys } from '../shared/protocol/curve.js';
import { ROOT, runCli, startCli } from './helpers/cli.js';

const DIR = join(ROOT, 'deploy', 'kubernetes');
const root = mkdtempSync(join(tmpdir(), 'cohort-k8s-'));
after(() => rmSync(root, { recursive: true, force: true }));

// ---- The schema: the parts of the Kubernetes OpenAPI definitions (v1.31) for the fields we use. ----
const str = { type: 'string', minLength: 1 };
const labels = { type: 'object', additionalProperties: { type: 'string', maxLength: 63, pattern: '^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]?$' } };
const dnsName = { type: 'string', pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', maxLength: 63 };
const quantity = {
  anyOf: [
    { type: 'integer', minimum: 0 },
    { type: 'string', pattern: '^[0-9.]+(m|k|Ki|Mi|Gi|Ti|M|G|T)?$' },
  ],
};
const intOrString = { anyOf: [{ type: 'integer', minimum: 1, maximum: 65535 }, dnsName] };
const closed = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', additionalProperties: false, properties, required });
const metadata = closed({ name: dnsName, labels, annotations: { type: 'object', additionalProperties: { type: 'string' } } }, ['name']);
const objectMeta = closed({ labels, annotations: { type: 'object', additionalProperties: { type: 'string' } } });
const envVar = closed(
  {
    name: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
    value: { type: 'string' },
    valueFrom: closed({ fieldRef: closed({ fieldPath: str, apiVersion: str }, ['fieldPath']) }),
  },
  ['name'],
);
const container = closed(
  {
    name: dnsName,
    image: str,
    command: { type: 'array', items: { type: 'string' } },
    args: { type: 'array', items: { type: 'string' } },
    env: { type: 'array', items: envVar },
    ports: {
      type: 'array',
      items: closed({ name: { type: 'string', maxLength: 15 }, containerPort: { type: 'integer', minimum: 1, maximum: 65535 }, protocol: { enum: ['TCP', 'UDP', 'SCTP'] } }, [
        'containerPort',
      ]),
    },
    resources: closed({ requests: { type: 'object', additionalProperties: quantity }, limits: { type: 'object', additionalProperties: quantity } }),
    securityContext: closed({
      allowPrivilegeEscalation: { type: 'boolean' },
      capabilities: closed({ drop: { type: 'array', items: str }, add: { type: 'array', items: str } }),
      readOnlyRootFilesystem: { type: 'boolean' },
    }),
    volumeMounts: {
      type: 'array',
      items: closed({ name: dnsName, mountPath: { type: 'string', pattern: '^/' }, readOnly: { type: 'boolean' }, subPath: str }, ['name', 'mountPath']),
    },
  },
  ['name', 'image'],
);
const volume = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: dnsName,
    secret: closed({ secretName: dnsName, defaultMode: { type: 'integer', minimum: 0, maximum: 511 } }, ['secretName']),
    configMap: closed({ name: dnsName, defaultMode: { type: 'integer', minimum: 0, maximum: 511 } }, ['name']),
    persistentVolumeClaim: closed({ claimName: dnsName, readOnly: { type: 'boolean' } }, ['claimName']),
    emptyDir: { type: 'object' },
  },
  // Exactly one source.
  oneOf: ['secret', 'configMap', 'persistentVolumeClaim', 'emptyDir'].map((k) => ({ required: [k] })),
};
const podSpec = (restartPolicies: string[]) =>
  closed(
    {
      restartPolicy: { enum: restartPolicies },
      terminationGracePeriodSeconds: { type: 'integer', minimum: 0 },
      securityContext: closed({ runAsNonRoot: { type: 'boolean' }, runAsUser: { type: 'integer' }, runAsGroup: { type: 'integer' }, fsGroup: { type: 'integer' } }),
      tolerations: {
        type: 'array',
        items: closed({ key: str, operator: { enum: ['Exists', 'Equal'] }, value: { type: 'string' }, effect: { enum: ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] } }),
      },
      nodeSelector: { type: 'object', additionalProperties: { type: 'string' } },
      containers: { type: 'array', minItems: 1, items: container },
      volumes: { type: 'array', items: volume },
    },
    ['containers'],
  );
const top = (apiVersion: string, kind: string, spec: unknown) =>
  closed({ apiVersion: { const: apiVersion }, kind: { const: kind }, metadata, spec }, ['apiVersion', 'kind', 'metadata', 'spec']);
const selector = closed({ matchLabels: labels }, ['matchLabels']);
const SCHEMAS: Record<string, unknown> = {
  Deployment: top(
    'apps/v1',
    'Deployment',
    closed(
      {
        replicas: { type: 'integer', minimum: 0 },
        strategy: closed({ type: { enum: ['Recreate', 'RollingUpdate'] } }),
        selector,
        template: closed({ metadata: objectMeta, spec: podSpec(['Always']) }, ['metadata', 'spec']),
      },
      ['selector', 'template'],
    ),
  ),
  Service: top(
    'v1',
    'Service',
    closed(
      {
        type: { enum: ['ClusterIP', 'NodePort', 'LoadBalancer'] },
        selector: labels,
        ports: {
          type: 'array',
          minItems: 1,
          items: closed({ name: dnsName, port: { type: 'integer', minimum: 1, maximum: 65535 }, targetPort: intOrString, protocol: { enum: ['TCP', 'UDP', 'SCTP'] } }, ['port']),
        },
      },
      ['selector', 'ports'],
    ),
  ),
  Job: top(
    'batch/v1',
    'Job',
    closed(
      {
        completionMode: { enum: ['NonIndexed', 'Indexed'] },
        completions: { type: 'integer', minimum: 1 },
        parallelism: { type: 'integer', minimum: 1 },
        backoffLimit: { type: 'integer', minimum: 0 },
        backoffLimitPerIndex: { type: 'integer', minimum: 0 },
        maxFailedIndexes: { type: 'integer', minimum: 0 },
        podReplacementPolicy: { enum: ['TerminatingOrFailed', 'Failed'] },
        podFailurePolicy: closed(
          {
            rules: {
              type: 'array',
              items: closed(
                {
                  action: { enum: ['FailJob', 'FailIndex', 'Ignore', 'Count'] },
                  onExitCodes: closed({ containerName: str, operator: { enum: ['In', 'NotIn'] }, values: { type: 'array', items: { type: 'integer' } } }, ['operator', 'values']),
                  onPodConditions: { type: 'array', items: closed({ type: str, status: { enum: ['True', 'False', 'Unknown'] } }, ['type']) },
                },
                ['action'],
              ),
            },
          },
          ['rules'],
        ),
        template: closed({ metadata: objectMeta, spec: podSpec(['Never', 'OnFailure']) }, ['spec']),
      },
      ['template'],
    ),
  ),
  PersistentVolumeClaim: top(
    'v1',
    'PersistentVolumeClaim',
    closed(
      {
        accessModes: { type: 'array', minItems: 1, items: { enum: ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'] } },
        storageClassName: str,
        resources: closed({ requests: closed({ storage: quantity }, ['storage']) }, ['requests']),
      },
      ['accessModes', 'resources'],
    ),
  ),
  Kustomization: closed(
    {
      apiVersion: { const: 'kustomize.config.k8s.io/v1beta1' },
      kind: { const: 'Kustomization' },
      namespace: dnsName,
      resources: { type: 'array', items: str },
      configMapGenerator: { type: 'array', items: closed({ name: dnsName, files: { type: 'array', items: str } }, ['name']) },
      secretGenerator: { type: 'array', items: closed({ name: dnsName, files: { type: 'array', items: str }, type: str }, ['name']) },
      generatorOptions: closed({ disableNameSuffixHash: { type: 'boolean' } }),
      images: { type: 'array', items: closed({ name: str, newName: str, newTag: str }, ['name']) },
      patches: { type: 'array', items: closed({ path: str, target: closed({ kind: str, name: str }) }, ['path']) },
    },
    ['apiVersion', 'kind', 'resources'],
  ),
};

// ---- The manifests. ----
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  resources?: { limits?: Record<string, string | number> };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  restartPolicy?: string;
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  containers: Container[];
  volumes?: { name: string; secret?: { secretName: string; defaultMode?: number }; configMap?: { name: string }; persistentVolumeClaim?: { claimName: string } }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Record<string, unknown> & { template?: { metadata?: { labels?: Record<string, string> }; spec: PodSpec } };
}
interface Kustomization {
  resources: string[];
  configMapGenerator: { name: string; files: string[] }[];
  secretGenerator: { name: string; files: string[] }[];
  images: { name: string; newName?: string; newTag?: string }[];
  patches?: { path: string }[];
}

/** The Dockerfile of each image name the manifests use. */
const DOCKERFILES: Record<string, string> = { 'cohort-cpu': 'cpu.Dockerfile', 'cohort-webgpu': 'webgpu.Dockerfile', 'cohort-gpu': 'gpu.Dockerfile' };

function yamlDocs(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(join(DIR, file), 'utf8'));
  return docs.map((d) => {
    assert.deepEqual(d.errors, [], `${file}: YAML errors`);
    return d.toJS() as unknown;
  });
}

const kustomization = yamlDocs('kustomization.yaml')[0] as Kustomization;
const objects = kustomization.resources.flatMap((file) => yamlDocs(file).map((o) => ({ file, object: o as K8sObject })));
const find = (kind: string, name?: string) => {
  const found = objects.filter((o) => o.object.kind === kind && (name === undefined || o.object.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''}`);
  return found[0].object;
};
const deployment = find('Deployment', 'cohort-coordinator');
const service = find('Service', 'cohort-coordinator');
const job = find('Job', 'cohort-workers');
const pvc = find('PersistentVolumeClaim');
const coordinatorPod = deployment.spec.template!.spec;
const workerPod = job.spec.template!.spec;
const [coordinator] = coordinatorPod.containers;
const [worker] = workerPod.containers;
const config = loadRunConfig(join(DIR, 'run.yaml'));

/** A container's args with its env references ($(NAME), from plain values) resolved. */
function resolvedArgs(c: Container, extra: Record<string, string> = {}): string[] {
  const values = new Map<string, string>(Object.entries(extra));
  for (const e of c.env ?? []) if (e.value !== undefined && !values.has(e.name)) values.set(e.name, e.value);
  return (c.args ?? []).map((a) =>
    a.replace(/\$\((\w+)\)/g, (_, name: string) => {
      assert.ok(values.has(name), `$(${name}) in the args of ${c.name} has a value`);
      return values.get(name)!;
    }),
  );
}
const argValue = (args: string[], option: string) => args[args.indexOf(option) + 1];

/** Kustomize's image transformer: `name[:tag]` whose name is an entry's name gets newName/newTag. */
function transformImage(image: string, images: Kustomization['images']): string {
  const at = image.lastIndexOf(':');
  const [name, tag] = at > image.lastIndexOf('/') ? [image.slice(0, at), image.slice(at + 1)] : [image, undefined];
  const entry = images.find((i) => i.name === name);
  if (!entry) return image;
  const newTag = entry.newTag ?? tag;
  return `${entry.newName ?? name}${newTag ? `:${newTag}` : ''}`;
}

/** A strategic merge patch for the fields used: objects merge, lists of named objects merge by name (containers, env). */
function strategicMerge(base: unknown, patch: unknown): unknown {
  type Named = { name: string };
  const named = (x: unknown): x is Named => typeof x === 'object' && x !== null && typeof (x as Named).name === 'string';
  if (Array.isArray(base) && Array.isArray(patch) && base.every(named) && patch.every(named)) {
    const merged = base.map((b) => {
      const p = patch.find((x) => x.name === b.name);
      return p === undefined ? b : strategicMerge(b, p);
    });
    return [...merged, ...patch.filter((p) => !base.some((b) => b.name === p.name))];
  }
  if (typeof base === 'object' && base !== null && !Array.isArray(base) && typeof patch === 'object' && patch !== null && !Array.isArray(patch)) {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [k, v] of Object.entries(patch)) out[k] = k in out ? strategicMerge(out[k], v) : v;
    return out;
  }
  return patch;
}

/** The uid:gid an image runs as (USER in its Dockerfile): a file name, or an image of DOCKERFILES. */
function imageUser(image: string): [number, number] {
  const file = image.endsWith('.Dockerfile') ? image : DOCKERFILES[image.split(':')[0]];
  assert.ok(file, `${image}: an image of deploy/docker`);
  const user = /^USER (\d+):(\d+)$/m.exec(readFileSync(join(ROOT, 'deploy', 'docker', file), 'utf8'));
  assert.ok(user, `${file} has a numeric USER`);
  return [Number(user[1]), Number(user[2])];
}

/** The options a `cohort <command> --help` lists. */
async function cliOptions(command: string): Promise<Set<string>> {
  const r = await runCli([command, '--help'], {}, 60_000);
  assert.equal(r.code, 0, r.stderr);
  const section = r.stdout.split(/^Options:$/m)[1] ?? '';
  return new Set([...section.matchAll(/^ {2}(--[a-z][a-z-]*)/gm)].map((m) => m[1]));
}

test('every object validates against the Kubernetes schema for the fields used (closed to unknown keys)', () => {
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
  const validators = new Map<string, ValidateFunction>(Object.entries(SCHEMAS).map(([kind, schema]) => [kind, ajv.compile(schema as object)]));
  const check = (label: string, kind: string, value: unknown) => {
    const validate = validators.get(kind);
    assert.ok(validate, `${label}: no schema for kind ${kind}`);
    assert.ok(validate(value), `${label}: ${ajv.errorsText(validate.errors, { separator: '\n' })}`);
  };
  check('kustomization.yaml', 'Kustomization', kustomization);
  assert.deepEqual(
    objects.map((o) => `${o.file}: ${o.object.kind}`),
    ['storage.yaml: PersistentVolumeClaim', 'coordinator.yaml: Deployment', 'coordinator.yaml: Service', 'workers.yaml: Job'],
  );
  for (const { file, object } of objects) check(`${file} ${object.kind}`, object.kind, object);
  // The schema does catch mistakes: a misspelt key, a GPU limit in the wrong place, a bad restart policy.
  const broken = structuredClone(job) as unknown as { spec: { template: { spec: { restartPolicy: string; containers: Record<string, unknown>[] } } } };
  broken.spec.template.spec.restartPolicy = 'Always';
  broken.spec.template.spec.containers[0].resource = { limits: { 'nvidia.com/gpu': 1 } };
  assert.equal(validators.get('Job')!(broken), false);
  assert.match(ajv.errorsText(validators.get('Job')!.errors), /must NOT have additional properties.*|must be equal to one of the allowed values/);
});

test('volumes, Secrets, the ConfigMap and the claim: every reference resolves', () => {
  const secrets = new Set(kustomization.secretGenerator.map((s) => s.name));
  const configMaps = new Set(kustomization.configMapGenerator.map((c) => c.name));
  for (const [label, pod] of [
    ['coordinator', coordinatorPod],
    ['workers', workerPod],
  ] as const) {
    const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    assert.equal(volumes.size, (pod.volumes ?? []).length, `${label}: volume names are unique`);
    for (const c of pod.containers) {
      for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${label}: mount ${m.name} names a volume of the pod`);
      const mounted = new Set((c.volumeMounts ?? []).map((m) => m.name));
      for (const v of volumes.keys()) assert.ok(mounted.has(v), `${label}: volume ${v} is mounted`);
      const paths = (c.volumeMounts ?? []).map((m) => m.mountPath);
      assert.equal(new Set(paths).size, paths.length, `${label}: mount paths are distinct`);
    }
    for (const v of volumes.values()) {
      if (v.secret) {
        assert.ok(secrets.has(v.secret.secretName), `${label}: Secret ${v.secret.secretName} is generated by kustomization.yaml`);
        // 0440 with fsGroup: readable by the non-root user through its group, by nobody else.
        assert.equal(v.secret.defaultMode, 0o440);
        assert.equal(pod.securityContext?.fsGroup, imageUser(pod.containers[0].image)[1]);
      }
      if (v.configMap) assert.ok(configMaps.has(v.configMap.name), `${label}: ConfigMap ${v.configMap.name} is generated`);
      if (v.persistentVolumeClaim) assert.equal(v.persistentVolumeClaim.claimName, pvc.metadata.name);
    }
    // The pods run as the images' user, which is not root.
    const [uid, gid] = imageUser(pod.containers[0].image);
    assert.deepEqual([pod.securityContext?.runAsNonRoot, pod.securityContext?.runAsUser, pod.securityContext?.runAsGroup], [true, uid, gid]);
  }
  assert.deepEqual(pvc.spec.accessModes, ['ReadWriteMany'], 'one volume mounted by every pod, on any node');
  // Each side gets only its own secret key.
  const coordinatorSecret = coordinatorPod.volumes!.find((v) => v.secret)!.secret!.secretName;
  const workerSecret = workerPod.volumes!.find((v) => v.secret)!.secret!.secretName;
  const filesOf = (name: string) => kustomization.secretGenerator.find((s) => s.name === name)!.files.map((f) => f.split('/').pop());
  assert.deepEqual(filesOf(coordinatorSecret).sort(), ['authorized_keys', 'coordinator.key']);
  assert.deepEqual(filesOf(workerSecret).sort(), ['coordinator.pub', 'worker.key']);
  // Images: the coordinator on the CPU image, the workers on the WebGPU image, both named in the kustomization.
  const imageNames = new Set(kustomization.images.map((i) => i.name));
  assert.equal(coordinator.image.split(':')[0], 'cohort-cpu');
  assert.equal(worker.image.split(':')[0], 'cohort-webgpu');
  for (const i of kustomization.images) {
    const file = DOCKERFILES[i.newName ?? i.name];
    assert.ok(file && existsSync(join(ROOT, 'deploy', 'docker', file)), `image ${i.name} is built by deploy/docker`);
  }
  for (const c of [coordinator, worker]) assert.ok(imageNames.has(c.image.split(':')[0]), `${c.image} is in the kustomization's images`);
  // keys/ never reaches git.
  assert.match(readFileSync(join(DIR, '.gitignore'), 'utf8'), /^keys\/$/m);
});

test("`cohort keys` writes the files the Secret generators read, and each Secret loads as its side's keys", () => {
  const keys = join(root, 'keys');
  generateKeys(keys);
  for (const generator of kustomization.secretGenerator) {
    const dir = join(root, generator.name);
    mkdirSync(dir);
    for (const file of generator.files) {
      assert.match(file, /^keys\/[a-z_.]+$/, 'read from deploy/kubernetes/keys, where `cohort keys deploy/kubernetes/keys` writes');
      copyFileSync(join(keys, file.slice('keys/'.length)), join(dir, file.slice('keys/'.length)));
    }
  }
  const c = loadCoordinatorKeys(join(root, 'cohort-coordinator-keys'));
  const w = loadWorkerKeys(join(root, 'cohort-worker-keys'));
  assert.equal(w.serverKey, c.publicKey);
  assert.ok(c.authorized.has(w.publicKey), 'the worker key is authorised');
  assert.throws(() => loadWorkerKeys(join(root, 'cohort-coordinator-keys')), /key file not found/);
});

test('the coordinator: one replica, Recreate, reached through the Service; the workers connect to it', () => {
  assert.equal(deployment.spec.replicas, 1);
  assert.deepEqual(deployment.spec.strategy, { type: 'Recreate' }, 'never two coordinators at once');
  const podLabels = deployment.spec.template!.metadata!.labels!;
  const matchLabels = (deployment.spec.selector as { matchLabels: Record<string, string> }).matchLabels;
  for (const [k, v] of Object.entries(matchLabels)) assert.equal(podLabels[k], v, `the Deployment's selector matches its pods (${k})`);
  const serviceSelector = service.spec.selector as Record<string, string>;
  for (const [k, v] of Object.entries(serviceSelector)) assert.equal(podLabels[k], v, `the Service selects the coordinator's pods (${k})`);
  // The worker pods must not match the Service.
  const workerLabels = job.spec.template!.metadata!.labels!;
  assert.ok(
    Object.entries(serviceSelector).some(([k, v]) => workerLabels[k] !== v),
    'the Service does not select workers',
  );
  const [port] = service.spec.ports as { port: number; targetPort: string | number }[];
  const containerPort = coordinator.ports!.find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
  assert.ok(containerPort, `the Service targets a port of the coordinator (${port.targetPort})`);
  const args = coordinator.args!.slice(2);
  assert.equal(args[args.indexOf('--bind') + 1], `tcp://0.0.0.0:${containerPort.containerPort}`, 'the coordinator binds the port the Service targets');
  assert.equal(worker.args![worker.args!.indexOf('--connect') + 1], `tcp://${service.metadata.name}:${port.port}`, 'workers connect to the Service');
  // Keys and config where the args say.
  const mountOf = (c: Container, volume: string) => c.volumeMounts!.find((m) => m.name === volume)!.mountPath;
  for (const c of [coordinator, worker]) {
    const a = c === coordinator ? args : c.args!;
    assert.equal(a[a.indexOf('--keys') + 1], mountOf(c, 'keys'));
    const configPath = c === coordinator ? a[1] : a[a.indexOf('--config') + 1];
    assert.equal(configPath, `${mountOf(c, 'run')}/${kustomization.configMapGenerator[0].files[0]}`);
  }
});

test('the workers: an indexed Job, one pod per member and teacher, one GPU each, retried like recovery.maxRestarts', () => {
  const workers = [...config.members, ...config.teachers];
  assert.equal(job.spec.completionMode, 'Indexed');
  assert.equal(job.spec.completions, workers.length, 'one completion index per worker of run.yaml');
  assert.equal(job.spec.parallelism, workers.length, 'all at once: the cohort trains together');
  assert.equal(workerPod.restartPolicy, 'Never', 'failed pods are replaced by the Job (podFailurePolicy needs Never)');
  assert.equal(job.spec.backoffLimitPerIndex, config.recovery.maxRestarts, 'each worker retried as often as the coordinator allows');
  assert.equal(job.spec.maxFailedIndexes, 0);
  assert.equal(config.recovery.policy, 'restart');
  const rules = (job.spec.podFailurePolicy as { rules: { action: string; onPodConditions?: { type: string }[] }[] }).rules;
  assert.deepEqual(
    rules,
    [
      { action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget' }] },
      // A graceful stop shuts the workers down with EXIT_STOPPED: started again, no retry used.
      { action: 'Ignore', onExitCodes: { containerName: 'worker', operator: 'In', values: [EXIT_STOPPED] } },
    ],
    'evictions, preemptions and a graceful stop do not use up retries',
  );
  assert.equal(worker.resources!.limits!['nvidia.com/gpu'], 1);
  assert.equal(worker.args![worker.args!.indexOf('--gpu') + 1], '0', 'the pod sees its one GPU as GPU 0');
  // The member name comes from the completion index.
  const index = worker.args![worker.args!.indexOf('--member-index') + 1];
  const ref = /^\$\((\w+)\)$/.exec(index);
  assert.ok(ref, `--member-index ${index} is an env reference`);
  const env = worker.env!.find((e) => e.name === ref[1]);
  assert.equal(env?.valueFrom?.fieldRef.fieldPath, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
  // The backend: the Job's --backend (COHORT_BACKEND) is the members' backend in run.yaml.
  const backend = argValue(resolvedArgs(worker, { COHORT_MEMBER_INDEX: '0' }), '--backend');
  for (const w of [...config.members, ...config.teachers]) assert.equal(w.backend, backend, `${w.name} runs on the workers' backend`);
  // The coordinator resumes from the shared volume: COHORT_RUN_DIR is the run's directory there.
  const runDir = coordinator.env!.find((e) => e.name === 'COHORT_RUN_DIR')!.value;
  assert.equal(runDir, runDirectory(config));
  const shared = coordinator.volumeMounts!.find((m) => m.name === 'shared')!.mountPath;
  assert.ok(runDir!.startsWith(`${shared}/`), `the run directory ${runDir} is on the shared volume ${shared}`);
  assert.equal(worker.volumeMounts!.find((m) => m.name === 'shared')!.mountPath, shared, 'workers write checkpoints at the same path');
});

test("the workers: --backend webgpu on the WebGPU image, with the graphics driver capability that mounts the driver's Vulkan files", () => {
  const args = resolvedArgs(worker, { COHORT_MEMBER_INDEX: '0' });
  assert.equal(argValue(args, '--backend'), 'webgpu');
  assert.equal(worker.image, 'cohort-webgpu:0.1.0');
  assert.deepEqual(
    kustomization.images.find((i) => i.name === 'cohort-webgpu'),
    { name: 'cohort-webgpu', newName: 'cohort-webgpu', newTag: '0.1.0' },
  );
  // One GPU per pod, seen as adapter 0.
  assert.equal(worker.resources!.limits!['nvidia.com/gpu'], 1);
  assert.equal(argValue(args, '--gpu'), '0');
  const env = new Map((worker.env ?? []).map((e) => [e.name, e.value]));
  const capabilities = (env.get('NVIDIA_DRIVER_CAPABILITIES') ?? '').split(',');
  for (const c of ['graphics', 'compute', 'utility']) assert.ok(capabilities.includes(c), `NVIDIA_DRIVER_CAPABILITIES has ${c}`);
  // Which GPU the pod gets is the device plugin's to say.
  assert.ok(!env.has('NVIDIA_VISIBLE_DEVICES'));
  // The image asks for the same capabilities.
  assert.match(readFileSync(join(ROOT, 'deploy', 'docker', 'webgpu.Dockerfile'), 'utf8'), /^\s*NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics\b/m);
});

test('deploy/kubernetes-cuda11: the same run with tensorflow-gpu workers on the CUDA 11 image', () => {
  const overlayDir = join(ROOT, 'deploy', 'kubernetes-cuda11');
  const overlay = parseAllDocuments(readFileSync(join(overlayDir, 'kustomization.yaml'), 'utf8'))[0].toJS() as Kustomization;
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
  const validKustomization = ajv.compile(SCHEMAS.Kustomization as object);
  assert.ok(validKustomization(overlay), ajv.errorsText(validKustomization.errors));
  assert.equal(overlay.resources.length, 1);
  assert.equal(resolve(overlayDir, overlay.resources[0]), DIR, 'everything else from the base');
  // kustomize refuses a base that contains the overlay ("cycle detected: ... contains visited root").
  assert.ok(!overlayDir.startsWith(`${DIR}/`), 'the overlay is not inside the base');
  // Built as kustomize would: the base's images, then the overlay's, then its patches.
  const patches = (overlay.patches ?? []).map((p) => parseAllDocuments(readFileSync(join(overlayDir, p.path), 'utf8'))[0].toJS() as K8sObject);
  assert.deepEqual(
    patches.map((p) => `${p.apiVersion} ${p.kind} ${p.metadata.name}`),
    [`${job.apiVersion} ${job.kind} ${job.metadata.name}`],
  );
  let built = structuredClone(job);
  for (const c of built.spec.template!.spec.containers) c.image = transformImage(transformImage(c.image, kustomization.images), overlay.images);
  for (const p of patches) built = strategicMerge(built, p) as K8sObject;
  const validJob = ajv.compile(SCHEMAS.Job as object);
  assert.ok(validJob(built), ajv.errorsText(validJob.errors));
  const pod = built.spec.template!.spec;
  assert.equal(pod.containers.length, 1);
  const [cuda] = pod.containers;
  assert.equal(cuda.image, 'cohort-gpu:0.1.0');
  const args = resolvedArgs(cuda, { COHORT_MEMBER_INDEX: '0' });
  assert.equal(argValue(args, '--backend'), 'tensorflow-gpu');
  const base = resolvedArgs(worker, { COHORT_MEMBER_INDEX: '0' });
  assert.deepEqual(
    args.filter((a) => a !== 'tensorflow-gpu'),
    base.filter((a) => a !== 'webgpu'),
    'nothing else changes',
  );
  assert.equal(cuda.env!.filter((e) => e.name === 'COHORT_BACKEND').length, 1, 'the env entry is replaced, not doubled');
  // The CUDA 11 image runs as the same user: the pod's securityContext still fits.
  const [uid, gid] = imageUser(cuda.image);
  assert.deepEqual([pod.securityContext?.runAsUser, pod.securityContext?.runAsGroup, pod.securityContext?.fsGroup], [uid, gid, gid]);
  assert.equal(cuda.resources!.limits!['nvidia.com/gpu'], 1);
});

test('every option the manifests pass to cohort is one the real CLI accepts', { timeout: 120_000 }, async () => {
  const [coordinatorOptions, workerOptions] = await Promise.all([cliOptions('coordinator'), cliOptions('worker')]);
  const coordinatorArgs = coordinator.args!.slice(2);
  assert.equal(coordinatorArgs[0], 'coordinator');
  for (const a of coordinatorArgs.filter((x) => x.startsWith('--'))) assert.ok(coordinatorOptions.has(a), `cohort coordinator has ${a}`);
  assert.ok(coordinatorOptions.has('--resume'), 'the wrapper adds --resume');
  // The worker image's entry point is cohort: args start with the command.
  assert.equal(worker.command, undefined);
  assert.equal(worker.args![0], 'worker');
  for (const a of worker.args!.filter((x) => x.startsWith('--'))) assert.ok(workerOptions.has(a), `cohort worker has ${a}`);
  assert.ok(Number.isInteger(Number(worker.args![worker.args!.indexOf('--timeout') + 1])));
  // The backend the Job passes is one of the CLI's choices (yargs refuses others).
  const backend = argValue(resolvedArgs(worker, { COHORT_MEMBER_INDEX: '0' }), '--backend');
  assert.ok((BACKEND_CHOICES as readonly string[]).includes(backend), backend);
});

test("a graceful stop fits in the pods' grace period: one step, the checkpoint's write and the shutdown (at least 60 s, more than the default 30 s)", () => {
  for (const pod of [coordinatorPod, workerPod]) assert.ok((pod.terminationGracePeriodSeconds ?? 30) >= 60, `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds}`);
  assert.equal(coordinatorPod.terminationGracePeriodSeconds, workerPod.terminationGracePeriodSeconds, 'the workers stay as long as the coordinator needs them');
});

test("the coordinator's wrapper: SIGTERM reaches cohort (a graceful stop); exit 75 restarts the pod, which resumes", { timeout: 30_000 }, async () => {
  const [script, zero, ...args] = coordinator.args!;
  const bin = join(root, 'bin-stop');
  mkdirSync(bin, { recursive: true });
  const calls = join(root, 'calls-stop');
  const ready = join(root, 'cohort-running');
  // cohort: stops on TERM with 75, like the real one.
  writeFileSync(join(bin, 'cohort'), `#!/bin/sh\ntrap 'echo "cohort stopped by TERM" >> ${calls}; exit 75' TERM\ntouch ${ready}\nwhile :; do sleep 0.05; done\n`);
  chmodSync(join(bin, 'cohort'), 0o755);
  const run = join(root, 'run-stop');
  mkdirSync(run, { recursive: true });
  const child = spawn('/bin/sh', ['-c', script, zero, ...args], { env: { PATH: `${bin}:/usr/bin:/bin`, COHORT_RUN_DIR: run } });
  const exited = new Promise<number | null>((done) => child.once('close', (code) => done(code)));
  const deadline = Date.now() + 10_000;
  while (!existsSync(ready) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  child.kill('SIGTERM'); // what tini passes on from the kubelet
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const code = await exited;
  clearTimeout(timer);
  assert.equal(code, EXIT_STOPPED, 'the container exits 75: the Deployment starts it again, and it resumes');
  assert.deepEqual(readFileSync(calls, 'utf8').trim().split('\n'), ['cohort stopped by TERM']);
  assert.ok(!existsSync(join(run, 'coordinator.done')), 'a stopped run is not marked complete');
});

test("the coordinator's wrapper: --resume only with a complete checkpoint, and idle once the run is complete", () => {
  assert.deepEqual(coordinator.command, ['/usr/bin/tini', '--', '/bin/sh', '-c']);
  const [script, zero, ...args] = coordinator.args!;
  assert.equal(zero, 'cohort-coordinator');
  const bin = join(root, 'bin');
  mkdirSync(bin, { recursive: true });
  const calls = join(root, 'calls');
  writeFileSync(join(bin, 'cohort'), `#!/bin/sh\necho "cohort $*" >> '${calls}'\nexit "\${FAKE_EXIT:-0}"\n`);
  writeFileSync(join(bin, 'sleep'), `#!/bin/sh\necho "sleep $*" >> '${calls}'\n`);
  chmodSync(join(bin, 'cohort'), 0o755);
  chmodSync(join(bin, 'sleep'), 0o755);
  const run = join(root, 'run');
  const wrapper = (env: Record<string, string> = {}) => {
    rmSync(calls, { force: true });
    const r = spawnSync('/bin/sh', ['-c', script, zero, ...args], { env: { PATH: `${bin}:/usr/bin:/bin`, COHORT_RUN_DIR: run, ...env }, encoding: 'utf8' });
    return { status: r.status, calls: existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : [], stdout: r.stdout };
  };
  const plain = `cohort ${args.join(' ')}`;
  // A fresh run: no checkpoint, no --resume; a crash exits non-zero (the Deployment restarts it).
  mkdirSync(join(run, 'checkpoints', 'step-000000200'), { recursive: true });
  assert.deepEqual(wrapper({ FAKE_EXIT: '3' }), { status: 3, calls: [plain], stdout: '' });
  // A complete checkpoint (its MANIFEST.json): the restarted coordinator resumes.
  writeFileSync(join(run, 'checkpoints', 'step-000000200', 'MANIFEST.json'), '{}');
  const resumed = wrapper();
  assert.deepEqual(resumed.calls, [`${plain} --resume`, 'sleep infinity']);
  assert.ok(existsSync(join(run, 'coordinator.done')), 'a completed run is marked');
  // Completed: it does not run again, it idles.
  const idle = wrapper();
  assert.deepEqual(idle.calls, ['sleep infinity']);
  assert.match(idle.stdout, /run .* is complete/);
});

test(
  "the Job's worker args (--member-index N --config FILE, --backend, --gpu) join as the N-th worker (members, then teachers); bad uses are one-line errors",
  { timeout: 120_000 },
  async () => {
    const names = [...config.members, ...config.teachers].map((w) => w.name);
    const router = new Router({ linger: 0 });
    await router.bind('tcp://127.0.0.1:*');
    const endpoint = router.lastEndpoint!;
    // The pod's args for completion index 2, with this test's endpoint, config path and timeout, without keys.
    const replaced: Record<string, string> = { '--connect': endpoint, '--config': join(DIR, 'run.yaml'), '--timeout': '30' };
    const podArgs = resolvedArgs(worker, { COHORT_MEMBER_INDEX: '2' });
    const args: string[] = [];
    for (let i = 0; i < podArgs.length; i++) {
      const a = podArgs[i];
      if (a === '--keys') {
        i++;
      } else if (a in replaced) {
        args.push(a, replaced[a]);
        i++;
      } else {
        args.push(a);
      }
    }
    assert.deepEqual([argValue(args, '--member-index'), argValue(args, '--backend'), argValue(args, '--gpu')], ['2', 'webgpu', '0']);
    const child = startCli([...args, '--insecure'], { output: 'ignore' });
    try {
      const [, ...frames] = await router.receive();
      const decoded = decodeMessage(frames);
      assert.ok(decoded.ok, decoded.ok ? '' : decoded.error);
      assert.equal(decoded.message.type, 'join');
      assert.equal(decoded.message.type === 'join' && decoded.message.member, names[2]);
    } finally {
      child.kill('SIGKILL');
      router.close();
    }
    const runYaml = join(DIR, 'run.yaml');
    const cases: [string[], RegExp][] = [
      [
        ['worker', '--connect', 'tcp://127.0.0.1:1', '--insecure', '--member-index', '4', '--config', runYaml],
        new RegExp(`--member-index 4 is out of range: .*run\\.yaml has 4 workers \\(0 ${names[0]}, 1 ${names[1]}, 2 ${names[2]}, 3 ${names[3]}\\)`),
      ],
      [['worker', '--connect', 'tcp://127.0.0.1:1', '--insecure', '--member-index', '1'], /--member-index needs --config FILE/],
      [
        ['worker', '--connect', 'tcp://127.0.0.1:1', '--insecure', '--member', 'a', '--member-index', '1', '--config', runYaml],
        /--member and --member-index contradict each other/,
      ],
      [['worker', '--connect', 'tcp://127.0.0.1:1', '--insecure', '--member-index', '-1', '--config', runYaml], /--member-index must be a worker index \(0, 1, \.\.\.\), got '-1'/],
      [['worker', '--connect', 'tcp://127.0.0.1:1', '--insecure', '--member', 'a', '--config', runYaml], /--config is read only with --member-index/],
    ];
    for (let i = 0; i < cases.length; i += 3) {
      const batch = cases.slice(i, i + 3);
      const results = await Promise.all(batch.map(([args]) => runCli(args, {}, 60_000)));
      batch.forEach(([args, what], k) => {
        const r = results[k];
        assert.equal(r.code, 2, `cohort ${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
        assert.match(r.stderr, /^cohort: error: /);
        assert.match(r.stderr, what);
      });
    }
  },
);

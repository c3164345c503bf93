/**
 * The coordinator's admission and step checks, with real sockets on loopback and hand-driven
 * workers: joins of another protocol version, of unknown or duplicate names, and of the wrong
 * role are refused with the reason; garbage is dropped and counted without stopping the run;
 * logits computed on different samples at the same step stop the run with an error naming
 * both workers; a DML step gives each member the mean of its peer's probabilities; received
 * tensors are released once their step is served (memory stays flat over many steps).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Packr } from 'msgpackr';
import { Dealer } from 'zeromq';
import { runCoordinator, type RunSummary } from '../coordinator/run-coordinator.js';
import { softmaxRows } from '../shared/metrics/softmax-rows.js';
import { resolveRunConfig } from '../shared/config/run-config.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { WorkerSocket } from '../shared/protocol/sockets.js';
import { runCli } from './helpers/cli.js';
import { predictionsMessage } from './helpers/messages.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-coordinator-'));
after(() => rmSync(root, { recursive: true, force: true }));

function start(name: string, timeoutMs = 20_000): { endpoint: Promise<string>; run: Promise<RunSummary>; lines: string[] } {
  const config = resolveRunConfig({
    name,
    algorithm: 'dml',
    dataset: { name: 'fashion-mnist' },
    members: [
      { name: 'a', model: { name: 'mlp-student' } },
      { name: 'b', model: { name: 'mlp-student' } },
    ],
    temperature: 2,
    runDir: root,
    exchange: { timeoutMs },
  });
  const lines: string[] = [];
  let resolveEndpoint!: (e: string) => void;
  const endpoint = new Promise<string>((r) => (resolveEndpoint = r));
  const run = runCoordinator({ config, bind: 'tcp://127.0.0.1:*', onListening: resolveEndpoint, log: (l) => lines.push(l) });
  run.catch(() => {});
  return { endpoint, run, lines };
}

const join_ = (member: string, extra: Partial<Extract<Message, { type: 'join' }>> = {}): Message => ({
  type: 'join',
  protocolVersion: PROTOCOL_VERSION,
  member,
  backend: 'test',
  device: '',
  pid: process.pid,
  host: 'test',
  ...extra,
});

/** The next message that is not one of the coordinator's heartbeats. */
async function next(socket: WorkerSocket): Promise<Message> {
  for (;;) {
    const message = await socket.receive(5000);
    if (message.type !== 'heartbeat') return message;
  }
}

async function worker(endpoint: string, name: string): Promise<WorkerSocket> {
  const socket = new WorkerSocket(name);
  socket.connect(endpoint);
  return socket;
}

/** A predictions message of `logits` tempered at T (computed in float64 here: the coordinator only averages). */
const predictions = (step: number, indices: number[], values: number[], T = 2): Message => {
  const classes = values.length / indices.length;
  const { probs, negEntropy } = softmaxRows(Float32Array.from(values), classes, T);
  return predictionsMessage(step, indices, probs, negEntropy.reduce((a, b) => a + b, 0) / indices.length);
};

test('admission: wrong version, unknown name, duplicate and wrong role are refused with the reason; garbage is dropped', async () => {
  const { endpoint, run, lines } = start('admission', 5000);
  const address = await endpoint;
  // A worker of protocol version 99: a raw dealer, since our codec only speaks this version.
  const old = new Dealer({ routingId: 'a', linger: 0 });
  old.connect(address);
  await old.send([new Packr({ useRecords: false }).pack({ v: 99, type: 'join', tensors: [] })]);
  const [oldAnswer] = await old.receive();
  assert.match(new Packr({ useRecords: false }).unpack(oldAnswer).reason, /protocol version 99 is not supported \(this side speaks version 1\)/);
  old.close();
  const garbage = new Dealer({ routingId: 'mallory', linger: 0 });
  garbage.connect(address);
  await garbage.send([Buffer.from('not msgpack at all'), Buffer.from([1, 2, 3])]);
  const stranger = await worker(address, 'zed');
  await stranger.send(join_('zed'));
  assert.deepEqual(await next(stranger), { type: 'reject', reason: "no member or teacher named 'zed' in run 'admission' (expected a, b)" });
  const teacher = await worker(address, 'b');
  await teacher.send(join_('b', { role: 'teacher' }));
  assert.deepEqual(await next(teacher), { type: 'reject', reason: "'b' is a member in this run, not a teacher" });
  const a = await worker(address, 'a');
  await a.send(join_('a', { runId: 'admission' }));
  const welcome = await next(a);
  assert.equal(welcome.type, 'welcome');
  if (welcome.type === 'welcome') {
    assert.deepEqual(welcome.members, ['a', 'b']);
    assert.equal((welcome.config as { algorithm: string }).algorithm, 'dml');
  }
  const twin = await worker(address, 'a');
  await twin.send(join_('a', { pid: 1, host: 'elsewhere' }));
  assert.deepEqual(await next(twin), { type: 'reject', reason: `'a' has already joined (from test:${process.pid})`, retryable: true });
  // The same process asking again (a slow first answer) is welcomed again.
  await a.send(join_('a'));
  assert.equal((await next(a)).type, 'welcome');
  const wrongRun = await worker(address, 'b');
  await wrongRun.send(join_('b', { runId: 'another-run' }));
  assert.deepEqual(await next(wrongRun), { type: 'reject', reason: "this coordinator runs 'admission', not 'another-run'" });
  await assert.rejects(run, /no message from a, b for 5 s; giving up/);
  assert.ok(
    lines.some((l) => /dropped a message from mallory: header frame is not valid msgpack/.test(l)),
    lines.join('\n'),
  );
  for (const s of [stranger, teacher, a, twin, wrongRun]) s.close();
  garbage.close();
});

test('a DML step: each member gets the mean of its peer probabilities at T; misaligned samples stop the run naming both workers', async () => {
  const { endpoint, run } = start('steps');
  const address = await endpoint;
  const [a, b] = [await worker(address, 'a'), await worker(address, 'b')];
  for (const [s, n] of [
    [a, 'a'],
    [b, 'b'],
  ] as const) {
    await s.send(join_(n));
    assert.equal((await next(s)).type, 'welcome');
  }
  const za = [1, 2, 0, 0, -1, 3];
  const zb = [0.5, 0, 2, 4, 1, 1];
  await a.send(predictions(0, [7, 9], za));
  await b.send(predictions(0, [7, 9], zb));
  const [ta, tb] = [await next(a), await next(b)];
  assert.equal(ta.type, 'teaching');
  assert.equal(tb.type, 'teaching');
  if (ta.type === 'teaching' && tb.type === 'teaching') {
    // With K = 2 each member's teaching is exactly its one peer's probabilities.
    const pb = softmaxRows(Float32Array.from(zb), 3, 2);
    const pa = softmaxRows(Float32Array.from(za), 3, 2);
    assert.deepEqual(ta.teaching.shape, [2, 3]);
    ta.teaching.data.forEach((v, k) => assert.equal(v, Math.fround(pb.probs[k])));
    tb.teaching.data.forEach((v, k) => assert.equal(v, Math.fround(pa.probs[k])));
    assert.ok(Math.abs(ta.peerNegEntropy! - (pb.negEntropy[0] + pb.negEntropy[1]) / 2) < 1e-12);
    assert.equal(ta.peerCount, 1);
  }
  await a.send(predictions(1, [3, 4], za));
  await b.send(predictions(1, [3, 5], zb));
  await assert.rejects(run, /step 1: b's batch holds samples \[3, 5\] but a's \[3, 4\]; workers must read the same data/);
  const shutdown = await next(a);
  assert.equal(shutdown.type, 'shutdown');
  a.close();
  b.close();
});

/** ZeroMQ's received buffers counted by V8 (zeromq.js reports each one as external memory until it is freed), after a full GC. */
async function liveExternalBytes(): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let i = 0; i < 3; i++) {
    gc();
    await nextTurn(); // buffer finalizers run after the collection
  }
  return getHeapStatistics().external_memory;
}

test('received tensors are released once their step is served: memory stays flat over 150 steps of 64x1000 logits', async () => {
  const { endpoint, run } = start('memory');
  const address = await endpoint;
  const sockets = [await worker(address, 'a'), await worker(address, 'b')];
  try {
    for (const [i, s] of sockets.entries()) {
      await s.send(join_(i === 0 ? 'a' : 'b'));
      assert.equal((await next(s)).type, 'welcome');
    }
    const rows = 64;
    const indices = Array.from({ length: rows }, (_, r) => r);
    const logits = [0, 1].map((m) => Array.from({ length: rows * 1000 }, (_, k) => Math.sin(k * (m + 1))));
    const messages = logits.map((z) => predictions(0, indices, z));
    const step = async (n: number) => {
      for (const [i, s] of sockets.entries()) await s.send({ ...messages[i], step: n, batch: n } as Message);
      for (const s of sockets) assert.equal((await next(s)).type, 'teaching');
    };
    for (let n = 0; n < 10; n++) await step(n);
    const before = await liveExternalBytes();
    for (let n = 10; n < 160; n++) await step(n);
    const grown = (await liveExternalBytes()) - before;
    for (const [i, s] of sockets.entries()) await s.send({ type: 'done', member: i === 0 ? 'a' : 'b' });
    await run;
    // Each step brings in 2 x 256 KB of probabilities: kept, 150 steps would hold 75 MiB.
    assert.ok(grown < 8 * 2 ** 20, `${(grown / 2 ** 20).toFixed(1)} MiB of received buffers still held after 150 more steps`);
  } finally {
    for (const s of sockets) s.close();
  }
});

test('a run directory that cannot be written is a clear error, before anything starts', async () => {
  const blocker = join(root, 'a-file');
  writeFileSync(blocker, 'not a directory');
  const config = join(root, 'unwritable.json');
  writeFileSync(
    config,
    JSON.stringify({
      algorithm: 'dml',
      dataset: { name: 'fashion-mnist' },
      members: [
        { name: 'a', model: { name: 'mlp-student' } },
        { name: 'b', model: { name: 'mlp-student' } },
      ],
      runDir: blocker,
    }),
  );
  const result = await runCli(['coordinator', config, '--bind', 'tcp://127.0.0.1:*', '--insecure']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, new RegExp(`^cohort: error: run directory ${blocker}/run is not writable: a part of the path is a file, not a folder \\(ENOTDIR\\)$`, 'm'));
});

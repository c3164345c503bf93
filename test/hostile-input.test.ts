/**
 * Bad input on the wire: while a real cohort trains (a coordinator and 3 worker processes over
 * tcp, wasm), 10,000+ hostile messages hit the coordinator's port from outside the cohort:
 * random bytes, truncated frames, another protocol version, another run id, joins under a taken
 * member name, oversized messages, predictions of the wrong shape and for steps already done.
 * The coordinator stays up, writes one log line per hostile message, and the cohort ends with
 * weights bit-identical to the same run without the attack. (The port is plain tcp on loopback
 * here, so that the messages reach the decoder; with CURVE they would not get past the handshake.)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr } from 'msgpackr';
import { Dealer } from 'zeromq';
import { loadFashionMnist } from '../shared/data/fashion-mnist.js';
import { mulberry32 } from '../shared/data/sampler.js';
import { initBackend } from '../shared/engine/backend.js';
import { readSavedWeights } from '../shared/io/model-files.js';
import { encodeMessage } from '../shared/protocol/codec.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { startCli } from './helpers/cli.js';
import { freePort } from './helpers/net.js';
import { writeDmlConfig } from './helpers/dml-config.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-hostile-'));
after(() => rmSync(root, { recursive: true, force: true }));
const cacheDir = join(root, 'cache');

before(async () => {
  await initBackend({ backend: 'cpu' });
  await loadFashionMnist({ cacheDir });
});

function configFile(name: string): string {
  return writeDmlConfig(name, { root, cacheDir, members: ['a', 'b', 'c'], steps: 30, extra: { progressEvery: undefined, exchange: { maxMessageMiB: 1 } } });
}

async function cohort(args: string[], onLine: (line: string) => void = () => {}): Promise<{ code: number | null; output: string[] }> {
  const { code, output } = await startCli(args, { onLine, timeoutMs: 280_000 }).exited;
  return { code, output: output.split('\n').slice(0, -1) };
}

/** A coordinator and its 3 workers as separate processes; `attack` runs once all have joined. */
async function run(name: string, attack?: (endpoint: string) => Promise<number>): Promise<{ log: string[]; sent: number }> {
  const port = await freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  let joined = 0;
  let attacking: Promise<number> | undefined;
  const coordinator = cohort(['coordinator', configFile(name), '--bind', endpoint, '--insecure', '--log-every', '10'], (line) => {
    if (/^coordinator: \w+ \(member\) joined/.test(line) && ++joined === 3 && attack) attacking = attack(endpoint);
  });
  const workers = ['a', 'b', 'c'].map((m) => cohort(['worker', '--connect', endpoint, '--member', m, '--insecure']));
  const results = await Promise.all([coordinator, ...workers]);
  results.forEach((r, i) => assert.equal(r.code, 0, `${i === 0 ? 'coordinator' : `worker ${i}`} failed:\n${r.output.slice(-30).join('\n')}`));
  return { log: results[0].output, sent: (await attacking) ?? 0 };
}

const packr = new Packr({ useRecords: false });

/** Sends the hostile messages from 4 connections; returns how many were sent. */
async function attack(endpoint: string): Promise<number> {
  const random = mulberry32(99);
  const bytes = (n: number) => Buffer.from(Uint8Array.from({ length: n }, () => random() * 256));
  const join = (extra: Record<string, unknown>): Message =>
    ({ type: 'join', protocolVersion: PROTOCOL_VERSION, member: 'a', backend: 'x', device: '', pid: 4242, host: 'mallory', ...extra }) as Message;
  const predictions = (step: number, rows: number, classes: number): Buffer[] =>
    encodeMessage({
      type: 'predictions',
      step,
      epoch: 0,
      batch: step,
      indices: { dtype: 'uint32', shape: [rows], data: new Uint32Array(rows) },
      probs: { dtype: 'float32', shape: [rows, classes], data: new Float32Array(rows * classes) },
      negEntropy: -1,
    });
  const valid = predictions(0, 32, 10);
  const kinds: [string, number, () => Buffer[]][] = [
    ['random bytes', 2500, () => [bytes(1 + Math.floor(random() * 200))]],
    ['truncated frames', 2000, () => [valid[0], valid[1], valid[2].subarray(0, 17)]],
    ['wrong protocol version', 1000, () => [packr.pack({ v: 99, type: 'join', tensors: [] })]],
    ['wrong run id', 1000, () => encodeMessage(join({ runId: 'another-run' }))],
    ['a taken member name', 1000, () => encodeMessage(join({}))],
    ['oversized', 5, () => [packr.pack({ v: PROTOCOL_VERSION, type: 'heartbeat', tensors: [] }), Buffer.alloc(1.5 * 2 ** 20)]],
    ['predictions of the wrong shape', 1500, () => predictions(3, 5, 7)],
    ['predictions for a step already done', 1000, () => predictions(0, 32, 10)],
  ];
  const dealers = Array.from({ length: 4 }, (_, i) => {
    const d = new Dealer({ linger: 0, routingId: `mallory-${i}`, sendHighWaterMark: 100_000 });
    d.connect(endpoint);
    return d;
  });
  // Drain whatever the coordinator answers (rejects), so its sends never block.
  for (const d of dealers)
    void (async () => {
      try {
        for await (const _ of d);
      } catch {
        /* closed */
      }
    })();
  let sent = 0;
  for (const [, count, make] of kinds) {
    for (let i = 0; i < count; i++) {
      await dealers[sent % dealers.length].send(make());
      sent++;
      if (sent % 200 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 2000));
  for (const d of dealers) d.close();
  return sent;
}

test('10,000 hostile messages during a real run: the coordinator logs each and the cohort ends as it would have', { timeout: 600_000 }, async () => {
  const clean = await run('clean');
  const attacked = await run('attacked', attack);
  assert.ok(attacked.sent >= 10_000, `${attacked.sent} messages sent`);
  const hostile = attacked.log.filter((l) => /^coordinator: (dropped a message from mallory|refused 'a'|ignored a .* message from mallory|ignored predictions)/.test(l));
  const byKind = {
    dropped: hostile.filter((l) => l.includes('dropped')).length,
    refused: hostile.filter((l) => l.includes('refused')).length,
    ignored: hostile.filter((l) => l.includes('ignored')).length,
  };
  assert.equal(hostile.length, attacked.sent, `one log line per hostile message: ${JSON.stringify(byKind)} for ${attacked.sent} sent`);
  assert.ok(attacked.log.some((l) => /protocol version 99 is not supported/.test(l)));
  assert.ok(attacked.log.some((l) => /over the limit of 1048576 bytes/.test(l)));
  assert.ok(attacked.log.some((l) => /refused 'a': 'a' has already joined/.test(l)));
  assert.ok(attacked.log.some((l) => /refused 'a': this coordinator runs 'attacked', not 'another-run'/.test(l)));
  assert.equal(clean.log.filter((l) => /mallory/.test(l)).length, 0);
  for (const member of ['a', 'b', 'c']) {
    const [x, y] = await Promise.all([readSavedWeights(join(root, 'runs', 'clean', member, 'final')), readSavedWeights(join(root, 'runs', 'attacked', member, 'final'))]);
    assert.deepEqual(
      y.map((w) => w.values),
      x.map((w) => w.values),
      member,
    );
  }
});

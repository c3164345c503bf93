/**
 * CURVE on the coordinator's port, with real sockets on tcp: `cohort keys` files (secret keys
 * 0600), an authorised worker exchanges messages, a worker with another key or without CURVE
 * cannot join (the coordinator logs the refused key, the worker's error says why), Z85 against
 * the RFC's test vector, and which endpoints count as loopback.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curveKeyPair } from 'zeromq';
import { generateKeys, isLoopbackEndpoint, loadCoordinatorKeys, loadWorkerKeys, z85Encode } from '../shared/protocol/curve.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { CoordinatorSocket, WorkerSocket } from '../shared/protocol/sockets.js';
import { runCli } from './helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'cohort-curve-'));
after(() => rmSync(root, { recursive: true, force: true }));

const join_ = (member: string): Message => ({ type: 'join', protocolVersion: PROTOCOL_VERSION, member, backend: 'test', device: '', pid: process.pid, host: 'test' });

test('Z85 encodes the RFC 32 test vector', () => {
  assert.equal(z85Encode(Uint8Array.of(0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b)), 'HelloWorld');
});

test('cohort keys writes the key files, secret ones readable by the owner only, and refuses to overwrite', async () => {
  const dir = join(root, 'keys-cli');
  const result = await runCli(['keys', dir]);
  assert.equal(result.code, 0, result.stderr);
  for (const f of ['coordinator.key', 'worker.key']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
  const coordinator = loadCoordinatorKeys(dir);
  const worker = loadWorkerKeys(dir);
  assert.equal(worker.serverKey, coordinator.publicKey);
  assert.ok(coordinator.authorized.has(worker.publicKey));
  assert.ok(readFileSync(join(dir, 'authorized_keys'), 'utf8').includes(worker.publicKey));
  const again = await runCli(['keys', dir]);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /already holds keys/);
});

test('an authorised worker talks to the coordinator; another key or no CURVE cannot join', async () => {
  const dir = join(root, 'keys');
  generateKeys(dir);
  const denied: string[] = [];
  const coordinator = new CoordinatorSocket({ curve: { ...loadCoordinatorKeys(dir), onDenied: (_address, key) => denied.push(key) }, onDropped: () => {} });
  const endpoint = await coordinator.bind('tcp://127.0.0.1:*');
  const good = new WorkerSocket('a', { curve: loadWorkerKeys(dir) });
  const stranger = curveKeyPair();
  const bad = new WorkerSocket('b', { curve: { ...stranger, serverKey: loadWorkerKeys(dir).serverKey } });
  const plain = new WorkerSocket('c');
  try {
    for (const w of [good, bad, plain]) w.connect(endpoint);
    for (const w of [good, bad, plain]) void w.send(join_(w.member)).catch(() => {});
    const { peer, message } = await coordinator.receive();
    assert.equal(message.type, 'join');
    assert.equal(message.type === 'join' && message.member, 'a');
    await coordinator.send(peer, { type: 'reject', reason: 'only checking the channel' });
    assert.deepEqual(await good.receive(5000), { type: 'reject', reason: 'only checking the channel' });
    await assert.rejects(bad.receive(1500), /no message from the coordinator within 1500 ms: the coordinator refused this worker's CURVE key/);
    await assert.rejects(plain.receive(500), /no message from the coordinator within 500 ms: the coordinator requires CURVE encryption/);
    assert.ok(denied.includes(stranger.publicKey), `denied: ${denied.join(', ')}`);
  } finally {
    for (const s of [good, bad, plain, coordinator]) s.close();
  }
});

test('loopback endpoints', () => {
  for (const e of ['tcp://127.0.0.1:5555', 'tcp://localhost:1', 'tcp://[::1]:9', 'ipc:///tmp/x', 'tcp://127.0.0.1:*']) assert.ok(isLoopbackEndpoint(e), e);
  for (const e of ['tcp://0.0.0.0:5555', 'tcp://10.0.0.5:5555', 'tcp://*:5555', 'tcp://eth0:1']) assert.ok(!isLoopbackEndpoint(e), e);
});

test('the CLI is secure by default: no keys is an error, --insecure only on loopback', async () => {
  const config = join(root, 'run.json');
  writeFileSync(config, JSON.stringify({ algorithm: 'baseline', dataset: { name: 'fashion-mnist' }, members: [{ name: 'a', model: { name: 'mlp-student' } }], runDir: root }));
  const none = await runCli(['coordinator', config, '--bind', 'tcp://127.0.0.1:*']);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /cohort coordinator encrypts and authenticates with CURVE by default: pass --keys DIR/);
  const open = await runCli(['coordinator', config, '--bind', 'tcp://0.0.0.0:5999', '--insecure']);
  assert.equal(open.code, 2);
  assert.match(open.stderr, /refusing --insecure on tcp:\/\/0\.0\.0\.0:5999: it is reachable from other machines/);
  const worker = await runCli(['worker', '--connect', 'tcp://10.1.2.3:5555', '--member', 'a', '--insecure']);
  assert.equal(worker.code, 2);
  assert.match(worker.stderr, /refusing --insecure on tcp:\/\/10\.1\.2\.3:5555/);
});

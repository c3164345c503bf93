/** The wire protocol: exact round-trips, zero-copy frames, float16, every malformed input, real sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { Dealer } from 'zeromq';
import { decodeMessage, encodeMessage } from '../shared/protocol/codec.js';
import { float16ToFloat32, float32ToFloat16 } from '../shared/protocol/float16.js';
import { PROTOCOL_VERSION, type Message, type MessageOf, type MessageType } from '../shared/protocol/messages.js';
import { CoordinatorSocket, WorkerSocket } from '../shared/protocol/sockets.js';
import { CohortError } from '../shared/errors.js';

const packr = new Packr({ useRecords: false });

function predictionsMessage(step = 3): MessageOf<'predictions'> {
  return {
    type: 'predictions',
    step,
    epoch: 1,
    batch: 7,
    indices: { dtype: 'int32', shape: [2], data: Int32Array.of(41, 9) },
    probs: { dtype: 'float32', shape: [2, 3], data: Float32Array.of(0.5, -1.25, 3, 1e-7, 2, -0) },
    negEntropy: -0.8123,
    loss: 0.6931471805599453,
  };
}

const samples: { [K in MessageType]: MessageOf<K> } = {
  join: {
    type: 'join',
    protocolVersion: PROTOCOL_VERSION,
    runId: 'run-1',
    member: 'resnet32-a',
    role: 'member',
    backend: 'tensorflow',
    device: 'cuda:0',
    pid: 4242,
    host: 'node-7',
  },
  welcome: {
    type: 'welcome',
    runId: 'run-1',
    member: 'resnet32-a',
    members: ['resnet32-a', 'resnet32-b'],
    startStep: 120,
    config: { algorithm: 'dml', members: [{ name: 'resnet32-a' }], nested: { T: 4 } },
  },
  reject: { type: 'reject', reason: 'member resnet32-a already joined' },
  predictions: predictionsMessage(),
  teaching: {
    type: 'teaching',
    step: 3,
    teaching: { dtype: 'float32', shape: [2, 2], data: Float32Array.of(0.25, 0.75, 0.5, 0.5) },
    peerNegEntropy: -0.5623351446188083,
    peerCount: 2,
  },
  heartbeat: { type: 'heartbeat' },
  eval: {
    type: 'eval',
    epoch: 4,
    metrics: { accuracy: 0.9125, nll: 0.31, ece: NaN },
    reliability: [
      { lower: 0, upper: 0.5, count: 0, accuracy: null, confidence: null },
      { lower: 0.5, upper: 1, count: 12, accuracy: 0.75, confidence: 0.8125 },
    ],
  },
  progress: { type: 'progress', epoch: 1, step: 959, totalSteps: 1876, loss: 0.4321, accuracy: 0.8521, imagesPerSecond: 512.5, stepMs: 62.4, lr: 0.001, generation: 0 },
  advance: { type: 'advance', step: 17 },
  evalLogits: {
    type: 'evalLogits',
    epoch: 0,
    batch: 2,
    indices: { dtype: 'uint32', shape: [2], data: Uint32Array.of(1000, 1001) },
    labels: { dtype: 'int32', shape: [2], data: Int32Array.of(3, 9) },
    logits: { dtype: 'float32', shape: [2, 3], data: Float32Array.of(0.5, -1, 2, 7, 0, -3) },
  },
  done: { type: 'done', member: 'resnet32-a', generation: 1 },
  checkpointed: { type: 'checkpointed', step: 200, generation: 0 },
  rollback: { type: 'rollback', step: 200, checkpoint: 'runs/x/checkpoints/step-000000200', generation: 1, reason: 'b exited with code 137' },
  stop: { type: 'stop', step: 31, reason: 'SIGTERM to the coordinator' },
  shutdown: { type: 'shutdown', reason: 'training finished' },
  error: { type: 'error', message: 'CUDA out of memory' },
};

function roundTrip(message: Message, options = {}): Message {
  const result = decodeMessage(encodeMessage(message, options));
  assert.ok(result.ok, result.ok ? '' : result.error);
  return result.message;
}

test('every message type round-trips exactly', () => {
  for (const message of Object.values(samples)) assert.deepStrictEqual(roundTrip(message), message);
  const { loss: _, ...noLoss } = predictionsMessage();
  assert.deepStrictEqual(roundTrip(noLoss), noLoss);
  const uint: Message = { ...predictionsMessage(), indices: { dtype: 'uint32', shape: [2], data: Uint32Array.of(4e9, 0) } };
  assert.deepStrictEqual(roundTrip(uint), uint);
});

test('float32 tensors go out without a copy, and aligned frames come back without one', () => {
  const backing = new Float32Array(16).map((_, i) => i);
  const message: Message = { ...predictionsMessage(), probs: { dtype: 'float32', shape: [2, 3], data: backing.subarray(5, 11) } };
  const frames = encodeMessage(message);
  assert.equal(frames.length, 3);
  const frame = frames[2];
  assert.equal(frame.buffer, backing.buffer);
  assert.equal(frame.byteOffset, 20);
  assert.equal(frame.byteLength, 24);
  const decoded = roundTrip(message) as MessageOf<'predictions'>;
  assert.equal(decoded.probs.data.buffer, backing.buffer); // a view of the received frame
  assert.deepEqual(Array.from(decoded.probs.data), [5, 6, 7, 8, 9, 10]);
});

test('frames at unaligned offsets are copied into aligned typed arrays', () => {
  const frames = encodeMessage(predictionsMessage());
  const odd = frames.map((f) => Buffer.concat([Buffer.alloc(1), f]).subarray(1));
  assert.ok(odd.slice(1).every((f) => f.byteOffset % 4 !== 0));
  const result = decodeMessage(odd);
  assert.ok(result.ok);
  const message = result.message as MessageOf<'predictions'>;
  assert.ok(message.probs.data instanceof Float32Array && message.probs.data.byteOffset % 4 === 0);
  assert.deepStrictEqual(message, predictionsMessage());
});

test('float16 rounds to nearest even and handles overflow, subnormals, NaN and -0', () => {
  const input = Float32Array.of(1, -2, 0.1, 65504, 65520, 6e-8, NaN, -0, 2049, 2051, 2 ** -25, 3 * 2 ** -25, 2 ** -14 - 2 ** -25, 65519.99, -1e6);
  const bits = float32ToFloat16(input);
  assert.deepEqual(Array.from(bits), [0x3c00, 0xc000, 0x2e66, 0x7bff, 0x7c00, 0x0001, 0x7e00, 0x8000, 0x6800, 0x6802, 0x0000, 0x0002, 0x0400, 0x7bff, 0xfc00]);
  const back = Array.from(float16ToFloat32(bits));
  assert.deepStrictEqual(back, [1, -2, 0.0999755859375, 65504, Infinity, 2 ** -24, NaN, -0, 2048, 2052, 0, 2 ** -23, 2 ** -14, 65504, -Infinity]);

  // Every half (NaNs aside) survives half → float → half unchanged.
  const all = Uint16Array.from({ length: 0x10000 }, (_, h) => h);
  const again = float32ToFloat16(float16ToFloat32(all));
  for (let h = 0; h < 0x10000; h++) {
    const nan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (nan) assert.ok(Number.isNaN(float16ToFloat32(Uint16Array.of(h))[0]));
    else assert.equal(again[h], h, `half 0x${h.toString(16)}`);
  }
});

test('the float16 option halves float32 frames, leaves int32 alone, and decodes to Float32Array', () => {
  const message: Message = { ...predictionsMessage(), probs: { dtype: 'float32', shape: [2, 4], data: Float32Array.of(1, -2, 0.1, 65504, 65520, 6e-8, NaN, -0) } };
  const plain = encodeMessage(message);
  const half = encodeMessage(message, { float16: true });
  assert.equal(half[2].byteLength * 2, plain[2].byteLength);
  assert.equal(half[1].byteLength, plain[1].byteLength);
  const decoded = roundTrip(message, { float16: true }) as MessageOf<'predictions'>;
  assert.equal(decoded.probs.dtype, 'float32');
  assert.ok(decoded.probs.data instanceof Float32Array);
  assert.deepStrictEqual(Array.from(decoded.probs.data), [1, -2, 0.0999755859375, 65504, Infinity, 2 ** -24, NaN, -0]);
  assert.deepStrictEqual(decoded.indices, message.indices);
});

test('encoding an invalid message throws a CohortError naming the problem', () => {
  const bad = { ...predictionsMessage(), probs: { dtype: 'float32', shape: [2, 4], data: new Float32Array(6) } } as Message;
  assert.throws(
    () => encodeMessage(bad),
    (e: Error) => e instanceof CohortError && /cannot encode predictions message: field 'probs': shape \[2,4\] has 8 elements but the data 6/.test(e.message),
  );
  assert.throws(() => encodeMessage({ ...samples.join, pid: -1 }), /cannot encode join message: field 'pid'/);
  assert.throws(() => encodeMessage({ type: 'nope' } as unknown as Message), /unknown type 'nope'/);
});

/** Header of a valid predictions message, to corrupt field by field. */
function predictionsHeader(): Record<string, unknown> {
  return {
    v: 1,
    type: 'predictions',
    step: 3,
    epoch: 1,
    batch: 7,
    negEntropy: -0.8123,
    tensors: [
      { key: 'indices', dtype: 'int32', shape: [2], byteLength: 8 },
      { key: 'probs', dtype: 'float32', shape: [2, 3], byteLength: 24 },
    ],
  };
}
const dataFrames = encodeMessage(predictionsMessage()).slice(1);
const withHeader = (patch: Record<string, unknown>, frames = dataFrames) => [packr.pack({ ...predictionsHeader(), ...patch }), ...frames];
const tensorsWith = (i: number, patch: Record<string, unknown>) => {
  const tensors = predictionsHeader().tensors as Record<string, unknown>[];
  tensors[i] = { ...tensors[i], ...patch };
  return tensors;
};

test('every malformed message is refused with a clear error, never thrown', () => {
  const good = encodeMessage(predictionsMessage());
  const total = good.reduce((n, f) => n + f.byteLength, 0);
  const cases: [string, Uint8Array[], RegExp, object?][] = [
    ['no frames', [], /empty message: no header frame/],
    ['garbage bytes', [Buffer.from('hello, garbage')], /header frame is not valid msgpack/],
    ['truncated header', [good[0].subarray(0, good[0].length - 3), ...dataFrames], /header frame is not valid msgpack/],
    ['not a map', [packr.pack([1, 2, 3])], /header frame is not a msgpack map/],
    ['wrong version', withHeader({ v: 2 }), /protocol version 2 is not supported \(this side speaks version 1\)/],
    ['no version', withHeader({ v: undefined }), /protocol version undefined is not supported/],
    ['unknown type', withHeader({ type: 'bogus' }), /unknown message type "bogus"/],
    ['no tensors list', withHeader({ tensors: 'x' }), /predictions message: header has no tensors list/],
    ['missing frame', good.slice(0, 2), /header lists 2 tensors but 1 data frames came with it/],
    ['extra frame', [...good, Buffer.alloc(4)], /header lists 2 tensors but 3 data frames came with it/],
    ['wrong byteLength', withHeader({ tensors: tensorsWith(1, { byteLength: 12 }) }), /tensor 'probs' declares byteLength 12 but shape \[2,3\] of float32 needs 24/],
    ['short data frame', [good[0], good[1], good[2].subarray(0, 20)], /tensor 'probs' declares 24 bytes but its frame has 20/],
    ['unknown dtype', withHeader({ tensors: tensorsWith(1, { dtype: 'float64' }) }), /tensor 'probs' has unknown dtype "float64"/],
    ['bad shape', withHeader({ tensors: tensorsWith(1, { shape: [2, -3] }) }), /tensor 'probs' shape must be a list of non-negative integers/],
    ['tensor named like a field', withHeader({ tensors: tensorsWith(1, { key: 'step' }) }), /tensor 'step' clashes with a header field/],
    ['tensor listed twice', withHeader({ tensors: tensorsWith(1, { key: 'indices' }) }), /tensor 'indices' is listed twice/],
    ['missing field', withHeader({ step: undefined }), /predictions message: field 'step': .*expected number, received undefined/],
    ['ill-typed field', withHeader({ epoch: 'one' }), /predictions message: field 'epoch': .*expected number, received string/],
    ['missing tensor', [packr.pack({ ...predictionsHeader(), tensors: tensorsWith(0, {}).slice(1) }), dataFrames[1]], /field 'indices': expected a int32 or uint32 tensor/],
    ['wrong tensor dtype', withHeader({ tensors: tensorsWith(0, { dtype: 'float32' }) }), /field 'indices': expected a int32 or uint32 tensor/],
    ['rows not matching indices', withHeader({ tensors: tensorsWith(1, { shape: [3, 2] }) }), /indices must have shape \[batchSize\] and probs \[batchSize, classes\]/],
    ['bad enum', [packr.pack({ ...samples.join, v: 1, tensors: [], role: 'boss' })], /join message: field 'role': Invalid option/],
    ['too large', good, new RegExp(`message of ${total} bytes is over the limit of ${total - 1} bytes`), { maxMessageBytes: total - 1 }],
    ['tensor too large', good, /tensor 'probs' of shape \[2,3\] is over the limit of 4 elements/, { maxTensorElements: 4 }],
  ];
  for (const [what, frames, pattern, limits] of cases) {
    let result;
    assert.doesNotThrow(() => {
      result = decodeMessage(frames, limits);
    }, what);
    assert.ok(result && !(result as { ok: boolean }).ok, `${what}: decoded`);
    assert.match((result as unknown as { error: string }).error, pattern, what);
  }
});

test('random corruption never throws', () => {
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (const message of Object.values(samples)) {
    const frames = encodeMessage(message);
    for (let trial = 0; trial < 300; trial++) {
      const corrupted = frames.map((f) => Buffer.from(f));
      const frame = corrupted[Math.floor(random() * corrupted.length)];
      if (random() < 0.3) corrupted.push(Buffer.from(frame.subarray(0, Math.floor(random() * frame.length))));
      for (let k = 0; k < 3 && frame.length; k++) frame[Math.floor(random() * frame.length)] = Math.floor(random() * 256);
      const result = decodeMessage(random() < 0.2 ? corrupted.slice(0, -1) : corrupted);
      assert.equal(typeof result.ok, 'boolean');
    }
  }
});

test('a coordinator serves three workers: join, welcome, predictions, teaching; garbage is dropped and counted', async () => {
  const dropped: [string, string][] = [];
  const coordinator = new CoordinatorSocket({ float16: true, onDropped: (error, peer) => dropped.push([error, peer.toString()]) });
  const names = ['alice', 'bob', 'carol'];
  const workers = names.map((name) => new WorkerSocket(name));
  const raw = new Dealer({ linger: 0, routingId: 'mallory' });
  try {
    const endpoint = await coordinator.bind('tcp://127.0.0.1:*');
    assert.match(endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/);
    for (const worker of workers) worker.connect(endpoint);
    await assert.rejects(workers[0].receive(50), (e: Error) => e instanceof CohortError && /alice: no message from the coordinator within 50 ms/.test(e.message));

    await Promise.all(workers.map((w, i) => w.send({ ...samples.join, member: names[i], pid: 1000 + i })));
    const joined = new Map<string, Buffer>();
    for (let i = 0; i < 3; i++) {
      const { peer, message } = await coordinator.receive();
      assert.equal(message.type, 'join');
      if (message.type !== 'join') continue;
      // The routing id names the member and the process: `member#pid#random`.
      assert.match(peer.toString(), new RegExp(`^${message.member}#${process.pid}#[0-9a-f]{8}$`));
      joined.set(message.member, peer);
    }
    assert.deepEqual([...joined.keys()].sort(), names);
    for (const [member, peer] of joined) await coordinator.send(peer, { type: 'welcome', runId: 'run-1', member, members: names, startStep: 0, config: { algorithm: 'dml' } });
    await assert.rejects(coordinator.send('nobody', samples.heartbeat), /cannot send heartbeat to worker nobody/);
    for (const [i, worker] of workers.entries()) {
      assert.deepStrictEqual(await worker.receive(2000), { type: 'welcome', runId: 'run-1', member: names[i], members: names, startStep: 0, config: { algorithm: 'dml' } });
    }

    // Garbage from a raw socket, then a valid message on the same connection (so it arrives after).
    await raw.connect(endpoint);
    await raw.send([Buffer.from('not msgpack at all'), Buffer.from([1, 2, 3])]);
    await raw.send(encodeMessage(samples.heartbeat));
    const afterGarbage = await coordinator.receive();
    assert.deepStrictEqual(afterGarbage.message, samples.heartbeat);
    assert.equal(afterGarbage.peer.toString(), 'mallory');
    assert.equal(coordinator.dropped, 1);
    assert.equal(dropped[0][1], 'mallory');
    assert.match(dropped[0][0], /header frame is not valid msgpack/);

    // Two steps: each worker sends predictions, the coordinator answers each with its peers' mean (float16 on the wire).
    for (const step of [0, 1]) {
      await Promise.all(
        workers.map((w, i) =>
          w.send({
            ...predictionsMessage(step),
            probs: { dtype: 'float32', shape: [2, 3], data: Float32Array.from({ length: 6 }, (_, k) => i + k / 10) },
          }),
        ),
      );
      const received = new Map<string, Float32Array>();
      for await (const { peer, message } of coordinator) {
        assert.ok(message.type === 'predictions' && message.step === step);
        received.set(peer.toString().split('#')[0], message.probs.data);
        if (received.size === 3) break;
      }
      for (const name of names) {
        const peers = names.filter((n) => n !== name).map((n) => received.get(n)!);
        const mean = Float32Array.from(peers[0], (x, k) => (x + peers[1][k]) / 2);
        await coordinator.send(joined.get(name)!, { type: 'teaching', step, teaching: { dtype: 'float32', shape: [2, 3], data: mean }, peerCount: 2 });
      }
      for (const [i, worker] of workers.entries()) {
        for await (const message of worker) {
          assert.ok(message.type === 'teaching' && message.step === step && message.peerCount === 2);
          const others = [0, 1, 2].filter((j) => j !== i);
          const expected = Float32Array.from({ length: 6 }, (_, k) => (others[0] + others[1]) / 2 + k / 10);
          assert.deepStrictEqual(message.teaching.data, float16ToFloat32(float32ToFloat16(expected)));
          break;
        }
      }
    }
    assert.equal(coordinator.dropped, 1);

    // Closing ends a pending iteration.
    const iterating = (async () => {
      for await (const _ of coordinator) assert.fail('no message expected');
    })();
    await new Promise((resolve) => setTimeout(resolve, 20));
    coordinator.close();
    await iterating;
  } finally {
    if (!coordinator.socket.closed) coordinator.close();
    for (const worker of workers) worker.close();
    raw.close();
  }
});

test('a member name that cannot be part of a routing id is refused; two sockets of one member are distinct peers', () => {
  assert.throws(() => new WorkerSocket(''), /member name "" cannot be used \(1 to 200 bytes/);
  assert.throws(() => new WorkerSocket('x'.repeat(201)), /1 to 200 bytes/);
  const [a, b] = [new WorkerSocket('a'), new WorkerSocket('a')];
  assert.notEqual(a.routingId, b.routingId);
  a.close();
  b.close();
});

/**
 * The member side of `npm run bench -- exchange`, in its own process (spawned by
 * bench/exchange.ts with a MembersSpec as JSON argument): K synthetic cohort members (real
 * WorkerSockets, no tfjs, no data) joined to the real coordinator, and K plain zeromq Dealers
 * connected to each of the benchmark's two raw Routers. Per step, taking the three paths in
 * turn, it sleeps `sleepMs` (synthetic compute, all K members at once as separate workers
 * would), then:
 *
 * - cohort: encodes each member's predictions message (not timed: each worker does that in its
 *   own process), starts the clock, sends all K, and stops it when the last member has received
 *   its teaching message; then decodes and checks every teaching signal against the expected
 *   leave-one-out mean (not timed).
 * - raw and rawRead: start the clock, send K prebuilt frame sets of the same sizes (one set per
 *   dealer, in its own memory, as each member sends its own predictions), and stop it when the
 *   last dealer has received its answer (from one of the two raw routers).
 *
 * All paths do the same member-side work inside the clock (send frames, receive frames), so
 * the times differ only by what sits between: the real coordinator or a bare Router. The times
 * (and the members' own median encode and decode times) go back to the parent over IPC.
 */
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Unpackr } from 'msgpackr';
import { Dealer } from 'zeromq';
import { leaveOneOutTeaching } from '../coordinator/teaching.js';
import { CohortError } from '../shared/errors.js';
import { decodeMessage, encodeMessage } from '../shared/protocol/codec.js';
import { PROTOCOL_VERSION, type Message } from '../shared/protocol/messages.js';
import { WorkerSocket } from '../shared/protocol/sockets.js';
import { PATHS, stepIndices, syntheticProbs, wireFrames, type MembersResult, type MembersSpec } from './exchange-wire.js';
import { median } from './stats.js';

const RECEIVE_TIMEOUT_MS = 30_000;
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A frame set with the time it arrived. */
interface Arrival {
  frames: Buffer[];
  at: number;
}

/** The dealer's next message other than a coordinator heartbeat, stamped on arrival (only the header is read). */
async function arrival(dealer: Dealer, what: string): Promise<Arrival> {
  for (;;) {
    let frames: Buffer[];
    try {
      frames = await dealer.receive();
    } catch (error) {
      throw new CohortError(`bench member process: no answer ${what} within ${RECEIVE_TIMEOUT_MS / 1000} s (${(error as Error).message})`, {
        code: 'COORDINATOR_TIMEOUT',
        cause: error,
      });
    }
    const at = performance.now();
    if (frames.length === 1 && (unpackr.unpack(frames[0]) as { type?: unknown }).type === 'heartbeat') continue;
    return { frames, at };
  }
}

/** One synthetic cohort member: joins through its WorkerSocket, then moves frames on its Dealer. */
class Member {
  readonly socket: WorkerSocket;
  readonly probs: Float32Array;

  constructor(
    readonly name: string,
    endpoint: string,
    batch: number,
    classes: number,
    index: number,
  ) {
    this.socket = new WorkerSocket(name);
    this.socket.connect(endpoint);
    this.probs = syntheticProbs(batch, classes, index);
  }

  async join(): Promise<void> {
    await this.socket.send({
      type: 'join',
      protocolVersion: PROTOCOL_VERSION,
      member: this.name,
      role: 'member',
      backend: 'synthetic',
      device: '',
      pid: process.pid,
      host: hostname(),
    });
    const answer = await this.next('a welcome');
    if (answer.type !== 'welcome') throw new CohortError(`bench member ${this.name}: expected a welcome, got ${answer.type}`, { code: 'PROTOCOL_MISMATCH' });
    this.socket.socket.receiveTimeout = RECEIVE_TIMEOUT_MS;
  }

  predictions(step: number, indices: Uint32Array): Buffer[] {
    const [batch, classes] = [indices.length, this.probs.length / indices.length];
    return encodeMessage({
      type: 'predictions',
      step,
      epoch: 0,
      batch: step,
      indices: { dtype: 'uint32', shape: [batch], data: indices },
      probs: { dtype: 'float32', shape: [batch, classes], data: this.probs },
      negEntropy: -1,
      loss: 1,
      generation: 0,
    });
  }

  async finish(): Promise<void> {
    await this.socket.send({ type: 'done', member: this.name, generation: 0 });
    const message = await this.next('the shutdown');
    if (message.type !== 'shutdown') throw new CohortError(`bench member ${this.name}: expected shutdown, got ${message.type}`, { code: 'PROTOCOL_MISMATCH' });
  }

  /** The coordinator's next message other than a heartbeat; a reject or error fails the bench. */
  private async next(what: string): Promise<Message> {
    for (;;) {
      let message: Message;
      try {
        message = await this.socket.receive(RECEIVE_TIMEOUT_MS);
      } catch (error) {
        throw error instanceof CohortError
          ? new CohortError(`bench member ${this.name}, waiting for ${what}: ${error.message}`, { code: 'PROTOCOL_MISMATCH', cause: error })
          : error;
      }
      if (message.type === 'heartbeat') continue;
      if (message.type === 'reject') throw new CohortError(`the coordinator refused bench member ${this.name}: ${message.reason}`, { code: 'JOIN_REFUSED' });
      if (message.type === 'error') throw new CohortError(`the coordinator failed: ${message.message}`, { code: 'COORDINATOR_FAILED' });
      if (message.type === 'shutdown' && what !== 'the shutdown') throw new CohortError(`the coordinator stopped the run: ${message.reason}`, { code: 'COORDINATOR_STOPPED' });
      return message;
    }
  }
}

/** Sends every frame set at once; ms from the first send to the last arrival. */
async function exchange(dealers: Dealer[], frames: Buffer[][], what: string): Promise<{ ms: number; answers: Arrival[] }> {
  const start = performance.now();
  const sent = dealers.map((d, i) => d.send(frames[i]));
  const answers = await Promise.all(dealers.map((d) => arrival(d, what)));
  await Promise.all(sent);
  return { ms: Math.max(...answers.map((a) => a.at)) - start, answers };
}

async function main(spec: MembersSpec): Promise<void> {
  const { members: K, batch, classes } = spec;
  const members = Array.from({ length: K }, (_, i) => new Member(`m${i}`, spec.cohort, batch, classes, i));
  const expected = leaveOneOutTeaching(
    members.map((m) => m.probs),
    members.map(() => -1),
  ).map((t) => t.meanProbs);
  // Each raw dealer sends its own buffers, as each member sends its own predictions.
  const rawUps = Array.from({ length: K }, () => wireFrames(batch, classes).up);
  const dealersOf = (endpoint: string) =>
    Array.from({ length: K }, (_, i) => {
      const dealer = new Dealer({ linger: 0, routingId: `r${i}`, receiveTimeout: RECEIVE_TIMEOUT_MS });
      dealer.connect(endpoint);
      return dealer;
    });
  const rawDealers = { raw: dealersOf(spec.raw), rawRead: dealersOf(spec.rawRead) };
  const result: MembersResult = { cohort: [], raw: [], rawRead: [], encodeMs: NaN, decodeMs: NaN };
  const encodeTimes: number[] = [];
  const decodeTimes: number[] = [];
  try {
    await Promise.all(members.map((m) => m.join()));
    for (let i = 0; i < spec.warmup + spec.steps; i++) {
      // The paths take turns going first, so none always follows the same one.
      for (const path of PATHS.map((_, j) => PATHS[(i + j) % PATHS.length])) {
        if (spec.sleepMs > 0) await sleep(spec.sleepMs);
        let ms: number;
        if (path !== 'cohort') {
          const dealers = rawDealers[path];
          ms = (await exchange(dealers, rawUps, `from the raw ZeroMQ router (${path}) at step ${i}`)).ms;
        } else {
          const indices = stepIndices(i, batch);
          const frames = members.map((m) => {
            const t = performance.now();
            const f = m.predictions(i, indices);
            encodeTimes.push(performance.now() - t);
            return f;
          });
          const done = await exchange(
            members.map((m) => m.socket.socket),
            frames,
            `from the coordinator at step ${i}`,
          );
          ms = done.ms;
          done.answers.forEach(({ frames: answer }, j) => {
            const t = performance.now();
            const decoded = decodeMessage(answer);
            decodeTimes.push(performance.now() - t);
            checkTeaching(members[j].name, i, decoded, expected[j]);
          });
        }
        if (i >= spec.warmup) result[path].push(ms);
      }
    }
    result.encodeMs = median(encodeTimes);
    result.decodeMs = median(decodeTimes);
    process.send!(result);
    await Promise.all(members.map((m) => m.finish()));
  } finally {
    for (const m of members) m.socket.close();
    for (const d of [...rawDealers.raw, ...rawDealers.rawRead]) d.close();
  }
}

/** The teaching signal must be this step's and equal the expected leave-one-out mean (up to the order of the coordinator's float64 sums). */
function checkTeaching(member: string, step: number, decoded: ReturnType<typeof decodeMessage>, expected: Float32Array): void {
  if (!decoded.ok) throw new CohortError(`bench member ${member}: cannot read the coordinator's answer: ${decoded.error}`, { code: 'PROTOCOL_MISMATCH' });
  const m = decoded.message;
  if (m.type !== 'teaching' || m.step !== step)
    throw new CohortError(`bench member ${member}: expected the teaching signal of step ${step}, got ${m.type}${m.type === 'teaching' ? ` of step ${m.step}` : ''}`, {
      code: 'PROTOCOL_MISMATCH',
    });
  const data = m.teaching.data;
  if (data.length !== expected.length)
    throw new CohortError(`bench member ${member}: teaching signal of ${data.length} values, expected ${expected.length}`, { code: 'PROTOCOL_MISMATCH' });
  for (let k = 0; k < data.length; k++) {
    if (!(Math.abs(data[k] - expected[k]) <= 1e-6))
      throw new CohortError(`bench member ${member}, step ${step}: teaching value ${k} is ${data[k]}, expected ${expected[k]}`, { code: 'INTERNAL' });
  }
}

if (!process.send) {
  console.error('bench/exchange-members.ts is started by bench/exchange.ts (it reports over an IPC channel)');
  process.exit(2);
}
try {
  await main(JSON.parse(process.argv[2] ?? '') as MembersSpec);
  process.disconnect();
} catch (error) {
  console.error(error instanceof CohortError ? error.message : error);
  process.exit(1);
}

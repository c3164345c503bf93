/**
 * Test helpers for driving real worker processes by hand: a fake coordinator (a bare ZeroMQ
 * ROUTER speaking the real codec) that welcomes workers with a given run config, keeps them
 * alive with heartbeats and records everything they send; and a small IDX dataset of random images written to disk.
 */
import { join } from 'node:path';
import { Router } from 'zeromq';
import { writeIdxFile } from '../../shared/data/idx.js';
import { mulberry32 } from '../../shared/data/sampler.js';
import { decodeMessage, encodeMessage } from '../../shared/protocol/codec.js';
import type { Message } from '../../shared/protocol/messages.js';

export interface Arrival {
  /** ms since the fake coordinator started. */
  at: number;
  /** The member name the worker joined as. */
  worker: string;
  message: Message;
}

/** The member part of a worker's routing id (`name#pid#random`). */
const memberOf = (peer: Buffer) => peer.toString('utf8').split('#')[0];

export class FakeCoordinator {
  // A send to a worker that has gone fails after 2 s instead of waiting for it forever.
  readonly router = new Router({ linger: 0, mandatory: true, sendTimeout: 2000 });
  readonly arrivals: Arrival[] = [];
  /** Messages that did not decode (a worker speaking something else than the protocol). */
  readonly undecodable: string[] = [];
  private readonly peers = new Map<string, Buffer>();
  private readonly started = Date.now();
  private sendQueue: Promise<void> = Promise.resolve();
  private wake: (() => void)[] = [];
  private heartbeat: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;

  /**
   * `config` goes into every welcome as is (the worker validates it); `onMessage` runs for each
   * decoded message after it is recorded (e.g. to serve teaching signals).
   */
  constructor(
    private readonly config: { name: string; members: { name: string }[]; teachers?: { name: string }[] },
    private readonly onMessage?: (worker: string, message: Message) => void | Promise<void>,
  ) {}

  /** Binds a free loopback port; returns the endpoint. */
  async start(): Promise<string> {
    await this.router.bind('tcp://127.0.0.1:*');
    this.loop = this.receiveLoop();
    this.heartbeat = setInterval(() => {
      for (const worker of this.peers.keys()) void this.send(worker, { type: 'heartbeat' }).catch(() => {});
    }, 300);
    return this.router.lastEndpoint!;
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [peer, ...frames] of this.router) {
        const result = decodeMessage(frames);
        if (!result.ok) {
          this.undecodable.push(result.error);
          continue;
        }
        const worker = memberOf(peer);
        const message = result.message;
        if (message.type === 'join') {
          this.peers.set(message.member, peer);
          const names = [...this.config.members, ...(this.config.teachers ?? [])].map((w) => w.name);
          await this.send(message.member, { type: 'welcome', runId: this.config.name, member: message.member, members: names, startStep: 0, config: this.config, generation: 0 });
        }
        this.arrivals.push({ at: Date.now() - this.started, worker, message });
        await this.onMessage?.(worker, message);
        for (const w of this.wake.splice(0)) w();
      }
    } catch (error) {
      if (!this.router.closed) throw error;
    }
  }

  send(worker: string, message: Message): Promise<void> {
    const peer = this.peers.get(worker);
    if (!peer) return Promise.reject(new Error(`no worker ${worker} has joined`));
    const sent = this.sendQueue.then(() => this.router.send([peer, ...encodeMessage(message)]));
    this.sendQueue = sent.catch(() => {});
    return sent;
  }

  /** The arrivals of one type (optionally from one worker), in order. */
  received<T extends Message['type']>(type: T, worker?: string): (Arrival & { message: Extract<Message, { type: T }> })[] {
    return this.arrivals.filter((a) => a.message.type === type && (worker === undefined || a.worker === worker)) as (Arrival & { message: Extract<Message, { type: T }> })[];
  }

  /** Resolves once `condition()` holds (checked after every arrival); rejects after `timeoutMs`. */
  async until(condition: () => boolean, timeoutMs: number, what: string, extra: () => string = () => ''): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${extra()}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 250));
        this.wake.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.router.close();
    await this.loop;
  }
}

/** `n` random 28x28 grey images with labels i mod 10, as an IDX pair under `dir`. */
export function randomIdx(dir: string, split: string, n: number, seed = n): { images: string; labels: string } {
  const random = mulberry32(seed);
  const paths = { images: join(dir, `${split}-images.idx`), labels: join(dir, `${split}-labels.idx`) };
  writeIdxFile(paths.images, { dims: [n, 28, 28], data: Uint8Array.from({ length: n * 784 }, () => Math.floor(random() * 256)) });
  writeIdxFile(paths.labels, { dims: [n], data: Uint8Array.from({ length: n }, (_, i) => i % 10) });
  return paths;
}

/**
 * Typed ZeroMQ sockets for the runtime: the coordinator's ROUTER, which serves every worker and
 * drops (and counts) what it cannot decode, and each worker's DEALER, whose routing id is its
 * member name. Both speak `Message`s through the codec and close with linger 0, and both set
 * the process's garbage collector for streaming (gc-tuning.ts).
 */
import { randomBytes } from 'node:crypto';
import { Dealer, Router } from 'zeromq';
import { CohortError } from '../errors.js';
import { decodeMessage, DEFAULT_LIMITS, encodeMessage, type DecodeFailure, type DecodeLimits, type EncodeOptions } from './codec.js';
import { tuneGcForStreaming } from './gc-tuning.js';
import { registerZapDomain, unregisterZapDomain, zapHandlerReady, type CoordinatorKeys, type WorkerKeys } from './curve.js';
import type { Message } from './messages.js';

export interface WorkerSocketOptions extends SocketOptions {
  /** CURVE: this worker's key pair and the coordinator's public key. */
  curve?: WorkerKeys;
  /** ZeroMQ's own heartbeats on this connection (default: a ping every 2 s, closed after 10 s unanswered). */
  zmtpHeartbeats?: { intervalMs: number; timeoutMs: number };
}

export interface SocketOptions extends EncodeOptions {
  /** Limits on received messages; `maxMessageBytes` also caps ZeroMQ's inbound message size. */
  limits?: Partial<DecodeLimits>;
}

export interface CoordinatorSocketOptions extends SocketOptions {
  /** Called for each undecodable message; by default a warning on stderr. */
  onDropped?: (error: string, peer: Buffer, code: DecodeFailure) => void;
  /** CURVE: encrypt, and admit only workers whose public key is authorised. */
  curve?: CoordinatorKeys & { onDenied?: (address: string, publicKey: string) => void };
}

/**
 * ZeroMQ's own (ZMTP) heartbeats: a connection whose peer stops answering pings for 10 s is
 * closed by ZeroMQ, so a dead machine is noticed even when no message is due; the application
 * level liveness (heartbeat messages, `recovery.livenessMs`) also catches a hung process.
 */
const ZMTP_HEARTBEATS = { heartbeatInterval: 2000, heartbeatTimeToLive: 10_000, heartbeatTimeout: 10_000 };

/** Nothing arrived from the coordinator within the time asked for. */
/** No message within a receive's timeout. */
export class ReceiveTimeout extends CohortError {
  constructor(message: string) {
    super(message, { code: 'COORDINATOR_TIMEOUT' });
  }
}

export interface Received {
  peer: Buffer;
  message: Message;
}

/** A routing id for messages: the member name when printable, else hex. */
export function peerName(peer: Buffer): string {
  const text = peer.toString('utf8');
  return /^[\x20-\x7e]+$/.test(text) ? text : `0x${peer.toString('hex')}`;
}

function endpointOf(socket: Router | Dealer): string {
  return socket.lastEndpoint ?? '(not bound)';
}

export class CoordinatorSocket {
  readonly socket: Router;
  private zapDomain: string | undefined;
  /** How many undecodable messages were dropped. */
  dropped = 0;
  private readonly limits: DecodeLimits;
  private readonly onDropped: (error: string, peer: Buffer, code: DecodeFailure) => void;

  constructor(private readonly options: CoordinatorSocketOptions = {}) {
    tuneGcForStreaming();
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    // mandatory: sending to an unknown worker fails instead of vanishing. No handover: a second
    // connection can never take over a live worker's routing id (each worker process has its own).
    // ZeroMQ itself disconnects a peer only past twice the limit, so that a message a little over
    // it reaches the decoder and is dropped with a log line naming the sender.
    const curve = options.curve;
    if (curve) {
      const onDenied = curve.onDenied ?? ((address, key) => console.warn(`cohort: refused a connection from ${address}: CURVE key ${key || '(none)'} is not authorised`));
      this.zapDomain = registerZapDomain(curve.authorized, onDenied);
    }
    this.socket = new Router({
      linger: 0,
      maxMessageSize: 2 * this.limits.maxMessageBytes,
      mandatory: true,
      // A worker that stops reading fills its pipe and would block every send queued behind it:
      // after this long the send fails and the worker is declared unreachable (lost).
      sendTimeout: 15_000,
      ...ZMTP_HEARTBEATS,
      ...(curve ? { curveServer: true, curveSecretKey: curve.secretKey, curvePublicKey: curve.publicKey, zapDomain: this.zapDomain } : {}),
    });
    this.onDropped = options.onDropped ?? ((error, peer) => console.warn(`cohort: dropped a message from ${peerName(peer)}: ${error}`));
  }

  /** Binds (e.g. `tcp://0.0.0.0:5555`, or `tcp://127.0.0.1:*` for any free port); returns the endpoint bound. */
  async bind(address: string): Promise<string> {
    if (this.zapDomain) await zapHandlerReady();
    try {
      await this.socket.bind(address);
    } catch (error) {
      throw new CohortError(`coordinator cannot bind ${address}: ${(error as Error).message}`, { code: 'SOCKET_FAILED', cause: error });
    }
    return endpointOf(this.socket);
  }

  /**
   * Sends to one worker (routing id = member name); `options` overrides the socket's encode
   * options. Sends are queued: ZeroMQ allows one pending send per socket.
   */
  send(peer: Buffer | string, message: Message, options: EncodeOptions = this.options): Promise<void> {
    const sent = this.queue.then(() => this.sendNow(peer, message, options));
    this.queue = sent.catch(() => {});
    return sent;
  }

  private queue: Promise<void> = Promise.resolve();

  /** Resolves once every send queued so far has gone out (or failed). */
  flush(): Promise<void> {
    return this.queue;
  }

  private async sendNow(peer: Buffer | string, message: Message, options: EncodeOptions): Promise<void> {
    try {
      await this.socket.send([peer, ...encodeMessage(message, options)]);
    } catch (error) {
      if (error instanceof CohortError) throw error;
      const peerText = typeof peer === 'string' ? peer : peerName(peer);
      throw new CohortError(`cannot send ${message.type} to worker ${peerText}: ${(error as Error).message}`, { code: 'SEND_FAILED', cause: error });
    }
  }

  /** Whether a message is waiting to be read. */
  hasQueued(): boolean {
    return this.socket.readable;
  }

  /** The next decodable message; undecodable ones are counted, reported to `onDropped` and skipped. */
  async receive(): Promise<Received> {
    for (;;) {
      const result = this.accept(await this.socket.receive());
      if (result) return result;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Received, void> {
    for await (const frames of this.socket) {
      const result = this.accept(frames);
      if (result) yield result;
    }
  }

  private accept([peer, ...frames]: Buffer[]): Received | undefined {
    const result = decodeMessage(frames, this.limits);
    if (result.ok) return { peer, message: result.message };
    this.dropped++;
    this.onDropped(result.error, peer, result.code);
    return undefined;
  }

  close(): void {
    this.socket.close();
    if (this.zapDomain) unregisterZapDomain(this.zapDomain);
  }
}

export class WorkerSocket {
  readonly socket: Dealer;
  readonly routingId: string;
  private readonly limits: DecodeLimits;

  /** Why the connection to the coordinator was refused, once ZeroMQ has said so. */
  private handshakeError: string | undefined;

  constructor(
    readonly member: string,
    private readonly options: WorkerSocketOptions = {},
  ) {
    const bytes = Buffer.byteLength(member);
    if (bytes === 0 || bytes > 200 || member.startsWith('\0')) {
      throw new CohortError(`member name ${JSON.stringify(member)} cannot be used (1 to 200 bytes, not starting with a zero byte)`, { code: 'INVALID_ARGUMENT' });
    }
    tuneGcForStreaming();
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    // The routing id names the member and this process uniquely: a restarted worker is a new
    // peer, and the coordinator maps peers to members at the join.
    this.routingId = `${member}#${process.pid}#${randomBytes(4).toString('hex')}`;
    const curve = options.curve;
    this.socket = new Dealer({
      linger: 0,
      maxMessageSize: this.limits.maxMessageBytes,
      routingId: this.routingId,
      ...(options.zmtpHeartbeats
        ? { heartbeatInterval: options.zmtpHeartbeats.intervalMs, heartbeatTimeout: options.zmtpHeartbeats.timeoutMs, heartbeatTimeToLive: options.zmtpHeartbeats.timeoutMs }
        : ZMTP_HEARTBEATS),
      ...(curve ? { curveServerKey: curve.serverKey, curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey } : {}),
    });
    this.socket.events.on('handshake:error:auth', () => {
      this.handshakeError = "the coordinator refused this worker's CURVE key (it is not in the coordinator's authorized_keys)";
    });
    this.socket.events.on('handshake:error:protocol', () => {
      this.handshakeError = curve
        ? 'the secure handshake failed (is the coordinator running with CURVE, and is coordinator.pub its key?)'
        : "the coordinator requires CURVE encryption: pass --keys DIR with this cluster's worker key";
    });
  }

  connect(address: string): void {
    try {
      this.socket.connect(address);
    } catch (error) {
      throw new CohortError(`worker ${this.member} cannot connect to ${address}: ${(error as Error).message}`, { code: 'SOCKET_FAILED', cause: error });
    }
  }

  /** `options` overrides the socket's encode options for this message. */
  /** Sends to the coordinator; sends are queued (ZeroMQ allows one pending send per socket). */
  send(message: Message, options: EncodeOptions = this.options): Promise<void> {
    const sent = this.queue.then(() => this.socket.send(encodeMessage(message, options)));
    this.queue = sent.catch(() => {});
    return sent;
  }

  private queue: Promise<void> = Promise.resolve();

  /** The next message if one has arrived, without waiting. */
  async poll(): Promise<Message | undefined> {
    try {
      return await this.receive(0);
    } catch (error) {
      if (error instanceof ReceiveTimeout) return undefined;
      throw error;
    }
  }

  /** The coordinator's next message, waiting at most `timeoutMs` (forever by default). */
  async receive(timeoutMs?: number): Promise<Message> {
    this.socket.receiveTimeout = timeoutMs ?? -1;
    let frames: Buffer[];
    try {
      frames = await this.socket.receive();
    } catch (error) {
      if ((error as { code?: string }).code === 'EAGAIN' && !this.socket.closed) {
        throw new ReceiveTimeout(`worker ${this.member}: no message from the coordinator within ${timeoutMs} ms${this.handshakeError ? `: ${this.handshakeError}` : ''}`);
      }
      throw error;
    }
    return this.decode(frames);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Message, void> {
    this.socket.receiveTimeout = -1;
    for await (const frames of this.socket) yield this.decode(frames);
  }

  /** The coordinator is trusted: a message this worker cannot read means mismatched versions, a fatal error. */
  private decode(frames: Buffer[]): Message {
    const result = decodeMessage(frames, this.limits);
    if (!result.ok) throw new CohortError(`worker ${this.member}: the coordinator sent a message this worker cannot read: ${result.error}`, { code: 'PROTOCOL_MISMATCH' });
    return result.message;
  }

  close(): void {
    this.socket.close();
  }
}

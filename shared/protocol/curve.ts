/**
 * ZeroMQ CURVE encryption and authentication for the coordinator's port. `cohort keys DIR`
 * writes a coordinator key pair and a worker key pair; the coordinator (CURVE server) accepts
 * only workers whose public key is listed in DIR/authorized_keys, checked by a ZAP handler
 * (ZeroMQ's authentication protocol, served in this process on inproc://zeromq.zap.01); a worker
 * needs its key pair and the coordinator's public key. Secret keys are written with mode 0600.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { curveKeyPair, Reply } from 'zeromq';
import { CohortError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-write.js';

export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

export interface CoordinatorKeys extends KeyPair {
  /** Z85 public keys of the workers allowed to connect. */
  authorized: Set<string>;
}

export interface WorkerKeys extends KeyPair {
  /** The coordinator's public key. */
  serverKey: string;
}

const FILES = { coordinator: 'coordinator.key', coordinatorPublic: 'coordinator.pub', worker: 'worker.key', authorized: 'authorized_keys' };

function writeSecret(path: string, pair: KeyPair): void {
  writeFileAtomic(path, Buffer.from(`${JSON.stringify(pair, null, 1)}\n`));
  chmodSync(path, 0o600);
}

/** Creates DIR with a coordinator key pair, a worker key pair, and the worker's key authorised. */
export function generateKeys(dir: string): { coordinator: KeyPair; worker: KeyPair } {
  if (existsSync(join(dir, FILES.coordinator)))
    throw new CohortError(`${dir} already holds keys (${FILES.coordinator}); choose another folder or remove them`, { code: 'CURVE_KEYS_INVALID' });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const coordinator = curveKeyPair();
  const worker = curveKeyPair();
  writeSecret(join(dir, FILES.coordinator), coordinator);
  writeFileAtomic(join(dir, FILES.coordinatorPublic), Buffer.from(`${coordinator.publicKey}\n`));
  writeSecret(join(dir, FILES.worker), worker);
  writeFileAtomic(join(dir, FILES.authorized), Buffer.from(`# Z85 CURVE public keys of the workers allowed to join, one per line\n${worker.publicKey} worker\n`));
  return { coordinator, worker };
}

function readKeyPair(path: string): KeyPair {
  if (!existsSync(path)) throw new CohortError(`key file not found: ${path} (create keys with \`cohort keys DIR\`)`, { code: 'CURVE_KEYS_INVALID' });
  try {
    const pair = JSON.parse(readFileSync(path, 'utf8')) as KeyPair;
    if (typeof pair.publicKey !== 'string' || pair.publicKey.length !== 40 || typeof pair.secretKey !== 'string' || pair.secretKey.length !== 40)
      throw new Error('expected {publicKey, secretKey} of 40 Z85 characters each');
    return pair;
  } catch (error) {
    throw new CohortError(`${path}: not a CURVE key pair (${(error as Error).message})`, { code: 'CURVE_KEYS_INVALID', cause: error });
  }
}

/** A run's own keys in `dir` (RUN/keys), created on its first start and reused when it resumes. */
export function runKeys(dir: string): CoordinatorKeys {
  if (!existsSync(join(dir, FILES.coordinator))) generateKeys(dir);
  return loadCoordinatorKeys(dir);
}

export function loadCoordinatorKeys(dir: string): CoordinatorKeys {
  const pair = readKeyPair(join(dir, FILES.coordinator));
  const authorizedPath = join(dir, FILES.authorized);
  if (!existsSync(authorizedPath)) throw new CohortError(`no ${authorizedPath}: list the workers' public keys there`, { code: 'CURVE_KEYS_INVALID' });
  const authorized = new Set(
    readFileSync(authorizedPath, 'utf8')
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[0])
      .filter((key) => key && !key.startsWith('#')),
  );
  return { ...pair, authorized };
}

export function loadWorkerKeys(dir: string): WorkerKeys {
  const pair = readKeyPair(join(dir, FILES.worker));
  const serverPath = join(dir, FILES.coordinatorPublic);
  if (!existsSync(serverPath)) throw new CohortError(`no ${serverPath}: copy the coordinator's public key there`, { code: 'CURVE_KEYS_INVALID' });
  return { ...pair, serverKey: readFileSync(serverPath, 'utf8').trim() };
}

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 encoding (ZeroMQ RFC 32) of bytes whose length is a multiple of 4. */
export function z85Encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
    const chunk: string[] = [];
    for (let k = 0; k < 5; k++) {
      chunk.unshift(Z85[value % 85]);
      value = Math.floor(value / 85);
    }
    out += chunk.join('');
  }
  return out;
}

interface ZapDomain {
  authorized: Set<string>;
  onDenied: (address: string, publicKey: string) => void;
}

const domains = new Map<string, ZapDomain>();
let handlerReady: Promise<void> | undefined;
let handlerSocket: Reply | undefined;

/**
 * Serves ZAP requests for every CURVE coordinator socket of this process. Resolves once the
 * handler is bound: a CURVE socket must not accept connections before (ZeroMQ admits every
 * client when no ZAP handler is listening).
 */
export function zapHandlerReady(): Promise<void> {
  handlerReady ??= (async () => {
    const socket = new Reply({ linger: 0 });
    handlerSocket = socket;
    try {
      await socket.bind('inproc://zeromq.zap.01');
    } catch (error) {
      throw new CohortError(`cannot start the CURVE authentication handler: ${(error as Error).message}`, { code: 'SOCKET_FAILED', cause: error });
    }
    void (async () => {
      try {
        for await (const frames of socket) {
          const [version, requestId, domain, address, , mechanism, key] = frames;
          const entry = domains.get(domain.toString());
          const publicKey = key && key.length === 32 ? z85Encode(key) : '';
          const allowed = mechanism?.toString() === 'CURVE' && entry !== undefined && entry.authorized.has(publicKey);
          if (!allowed) entry?.onDenied(address.toString(), publicKey);
          await socket.send([version, requestId, allowed ? '200' : '400', allowed ? 'OK' : 'key not authorised', allowed ? publicKey : '', '']);
        }
      } catch {
        // closed with the process
      }
    })();
  })();
  return handlerReady;
}

/** Registers a ZAP domain for one coordinator socket; returns the domain name. */
export function registerZapDomain(authorized: Set<string>, onDenied: ZapDomain['onDenied']): string {
  const domain = `cohort-${domains.size + 1}-${process.pid}`;
  domains.set(domain, { authorized, onDenied });
  return domain;
}

/** Forgets a closed socket's domain; the handler stops with the last one (so the process can exit). */
export function unregisterZapDomain(domain: string): void {
  domains.delete(domain);
  if (domains.size === 0 && handlerSocket) {
    handlerSocket.close();
    handlerSocket = undefined;
    handlerReady = undefined;
  }
}

/** Whether `address` (a ZeroMQ endpoint) is reachable only from this machine. */
export function isLoopbackEndpoint(address: string): boolean {
  if (address.startsWith('ipc://') || address.startsWith('inproc://')) return true;
  const host = /^tcp:\/\/(\[[^\]]+\]|[^:]+):/.exec(address)?.[1];
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]' || (host?.startsWith('127.') ?? false);
}

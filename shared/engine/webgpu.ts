/**
 * The WebGPU backend on Dawn (npm `webgpu`): finding adapters, pinning a process to one, the
 * device, and its teardown. tfjs-backend-webgpu runs on it unchanged once `navigator.gpu` and
 * Dawn's globals exist.
 *
 * Adapters are listed in a child process (webgpu-probe.ts): Dawn prints its reasons for
 * refusing a driver on the process's stderr, which the child captures (they become the reason
 * in "no adapter" errors), and this process does not hold a Vulkan instance it does not use.
 *
 * Pinning (`gpu: N`): the N-th hardware adapter in Dawn's enumeration order (the order the
 * Vulkan loader returns physical devices). Dawn's node binding has one selection flag,
 * `adapter=NAME` (the first adapter whose name contains NAME), so an adapter is pinned by its
 * name when that name is unique; several adapters with one name (8 identical GPUs) are told
 * apart through Mesa's device-select Vulkan layer (DRI_PRIME=pci-DDDD_BB_DD_F with
 * MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1, the N-th display device by PCI bus order, the
 * order nvidia-smi numbers GPUs in), which must then leave exactly one adapter. A container
 * given one GPU (NVIDIA_VISIBLE_DEVICES, a Kubernetes GPU request, Slurm's --gres) sees that
 * GPU alone, as adapter 0.
 */
/// <reference types="@webgpu/types" />
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CohortError } from '../errors.js';

/** One adapter as Dawn lists it. */
export interface AdapterListing {
  /** Dawn's backend: vulkan, opengles, opengl, ... */
  backend: string;
  /** The driver's name of the device, e.g. "NVIDIA H200" or "llvmpipe (LLVM 15.0.6, 256 bits)". */
  name: string;
  /** A CPU implementation (llvmpipe, softpipe, lavapipe, SwiftShader): never picked by `auto`. */
  software: boolean;
}

export interface AdapterProbe {
  adapters: AdapterListing[];
  /** What Dawn said while looking (driver refusals, loader errors), one line per message. */
  reason: string;
}

/** Which adapters a process may use. */
export type AdapterKind = 'hardware' | 'software';

const SOFTWARE_NAMES = /llvmpipe|softpipe|lavapipe|swiftshader/i;

export function isSoftwareAdapter(name: string): boolean {
  return SOFTWARE_NAMES.test(name);
}

/** Tests and CI ask for Mesa llvmpipe with COHORT_WEBGPU_SOFTWARE=1. */
export function softwareRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.COHORT_WEBGPU_SOFTWARE === '1';
}

/**
 * Dawn flags and adapter options by kind: hardware through Vulkan (Dawn's default on Linux);
 * software through Mesa llvmpipe over EGL (Debian's lavapipe Vulkan is refused by Dawn), which
 * offers only WebGPU's compatibility feature level.
 */
export function dawnFlags(kind: AdapterKind): { flags: string[]; featureLevel: 'core' | 'compatibility' } {
  return kind === 'software' ? { flags: ['backend=opengles'], featureLevel: 'compatibility' } : { flags: ['backend=vulkan'], featureLevel: 'core' };
}

/** Environment a software adapter needs: EGL without a display. */
export function softwareEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, EGL_PLATFORM: env.EGL_PLATFORM ?? 'surfaceless' };
}

/** Lists Dawn's adapters of one kind in a child process (see the file comment). */
export function probeAdapters(kind: AdapterKind, env: NodeJS.ProcessEnv = process.env): AdapterProbe {
  const script = fileURLToPath(new URL(`./webgpu-probe${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const result = spawnSync(process.execPath, [...loader, script, kind], {
    env: kind === 'software' ? softwareEnvironment(env) : env,
    encoding: 'utf8',
    timeout: 60_000,
  });
  const reason = dawnReason(result.stderr ?? '');
  const line = (result.stdout ?? '').split('\n').find((l) => l.startsWith('{'));
  if (result.status !== 0 || !line) {
    const why = result.error ? result.error.message : reason || `exit ${result.status ?? result.signal}`;
    throw new CohortError(`backend 'webgpu': listing WebGPU adapters failed: ${why}`, { code: 'WEBGPU_PROBE_FAILED' });
  }
  const listed = JSON.parse(line) as { adapters: Omit<AdapterListing, 'software'>[]; reason?: string };
  return {
    adapters: listed.adapters.map((a) => ({ ...a, software: isSoftwareAdapter(a.name) })),
    reason: [listed.reason, reason].filter(Boolean).join('; '),
  };
}

/** Dawn's diagnostics, without its source locations and blank lines. */
function dawnReason(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('at ') && !l.startsWith('- While'))
    .map((l) => l.replace(/^Warning:\s*/, ''));
  return [...new Set(lines)].join('; ');
}

/** Parses the adapter list of Dawn's "no adapter ... found / Available adapters:" rejection. */
export function parseAdapterList(message: string): Omit<AdapterListing, 'software'>[] {
  const adapters: Omit<AdapterListing, 'software'>[] = [];
  for (const line of message.split('\n')) {
    const match = /^\s*\* backend: '([^']*)', name: '(.*)'\s*$/.exec(line);
    if (match) adapters.push({ backend: match[1], name: match[2] });
  }
  return adapters;
}

/** Display-class PCI devices (class 0x03xxxx) by bus address: the order nvidia-smi numbers GPUs in. */
export function displayDevicesByBus(root = '/sys/bus/pci/devices'): { address: string; vendor: string }[] {
  let entries: string[];
  try {
    entries = readdirSync(root);
  } catch {
    return [];
  }
  const devices: { address: string; vendor: string }[] = [];
  for (const address of entries.sort()) {
    try {
      const cls = readFileSync(`${root}/${address}/class`, 'utf8').trim();
      if (!cls.startsWith('0x03')) continue;
      devices.push({ address, vendor: readFileSync(`${root}/${address}/vendor`, 'utf8').trim() });
    } catch {
      // A device that vanished or cannot be read is not a GPU we can use.
    }
  }
  return devices;
}

/** DRI_PRIME's form of a PCI address: 0000:3b:00.0 -> pci-0000_3b_00_0. */
export function driPrimeTag(address: string): string {
  return `pci-${address.replace(/[:.]/g, '_')}`;
}

/** How this process selects its adapter: Dawn flags, and environment set before Dawn loads. */
export interface AdapterChoice {
  kind: AdapterKind;
  /** The adapter's name as Dawn lists it. */
  name: string;
  flags: string[];
  env: Record<string, string>;
  /** Hardware adapters seen (before pinning). */
  seen: number;
}

const HARDWARE_HINT =
  'install the GPU driver with its Vulkan ICD and the Vulkan loader (Debian: apt-get install libvulkan1; NVIDIA in a container: NVIDIA_DRIVER_CAPABILITIES must include graphics); for tests, COHORT_WEBGPU_SOFTWARE=1 uses Mesa llvmpipe';
const SOFTWARE_HINT = "Mesa llvmpipe over EGL needs Debian's libegl1, libegl-mesa0, libegl-dev and libgl1-mesa-dri";

/**
 * Chooses the adapter for `gpu` (default 0) among those `probe` lists. Throws a CohortError
 * that says why when there is none, or when the index does not exist.
 */
export function chooseAdapter(kind: AdapterKind, probe: AdapterProbe, gpu: number | undefined, pciDevices = displayDevicesByBus()): AdapterChoice {
  const usable = probe.adapters.filter((a) => (kind === 'software' ? a.software : !a.software));
  if (usable.length === 0) {
    const others = probe.adapters.length > 0 ? ` (only ${probe.adapters.map((a) => `${a.name} [${a.backend}]`).join(', ')})` : '';
    const why = probe.reason ? `: Dawn says: ${probe.reason}` : '';
    throw new CohortError(
      kind === 'software'
        ? `backend 'webgpu' found no software adapter${others}${why}; ${SOFTWARE_HINT}`
        : `backend 'webgpu' found no hardware GPU adapter${others}${why}; ${HARDWARE_HINT}`,
      { code: 'WEBGPU_NO_ADAPTER' },
    );
  }
  const index = gpu ?? 0;
  if (index >= usable.length) {
    throw new CohortError(
      `--gpu ${index}: this machine has ${usable.length} ${kind} WebGPU adapter${usable.length === 1 ? '' : 's'} (${usable.map((a, i) => `${i}: ${a.name}`).join(', ')}); use 0${usable.length > 1 ? `-${usable.length - 1}` : ''}`,
      { code: 'GPU_INDEX_OUT_OF_RANGE' },
    );
  }
  const chosen = usable[index];
  const base = dawnFlags(kind).flags;
  const sameName = usable.filter((a) => a.name === chosen.name).length;
  if (sameName === 1) return { kind, name: chosen.name, flags: [...base, `adapter=${chosen.name}`], env: {}, seen: usable.length };
  // Identical adapters: Mesa's device-select layer keeps only the N-th display device by PCI bus.
  const device = pciDevices[index];
  if (!device) {
    throw new CohortError(`--gpu ${index}: ${sameName} adapters are named '${chosen.name}' and the PCI display devices cannot be read to tell them apart`, {
      code: 'GPU_PIN_UNAVAILABLE',
    });
  }
  return { kind, name: chosen.name, flags: base, env: { DRI_PRIME: driPrimeTag(device.address), MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' }, seen: usable.length };
}

/** What a worker prints and reports of its adapter. */
export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Dawn backend (vulkan, opengles). */
  dawnBackend: string;
  software: boolean;
}

export interface WebgpuSession {
  device: GPUDevice;
  info: AdapterInfo;
  /** Destroys the device: a process holding one does not exit. Idempotent. */
  close(): void;
}

type DawnModule = { create(flags: string[]): GPU; globals: Record<string, unknown> };

/**
 * Opens the chosen adapter and a device with all of the adapter's limits (tfjs' own
 * registration asks for only six; llvmpipe's largest storage binding is 128 MiB).
 */
export async function openDevice(choice: AdapterChoice): Promise<WebgpuSession> {
  if (choice.kind === 'software') Object.assign(process.env, softwareEnvironment(process.env));
  Object.assign(process.env, choice.env);
  const dawn = (await import('webgpu')) as unknown as DawnModule;
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create(choice.flags);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });

  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ featureLevel: dawnFlags(choice.kind).featureLevel, powerPreference: 'high-performance' } as GPURequestAdapterOptions);
  } catch (error) {
    throw new CohortError(`backend 'webgpu': Dawn refused the adapter '${choice.name}': ${String((error as Error)?.message ?? error).split('\n')[0]}`, {
      code: 'WEBGPU_NO_ADAPTER',
      cause: error,
    });
  }
  if (!adapter) throw new CohortError(`backend 'webgpu': the adapter '${choice.name}' was listed but could not be opened`, { code: 'WEBGPU_NO_ADAPTER' });

  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === 'number') requiredLimits[key] = value;
  }
  const requiredFeatures = (['timestamp-query'] as GPUFeatureName[]).filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  let closed = false;
  void device.lost.then((lost) => {
    if (closed) return;
    // A lost device cannot compute again: end the process so that recovery replaces it.
    process.stderr.write(`cohort: webgpu device lost (${lost.reason}): ${lost.message}\n`);
    process.exit(3);
  });
  const info = adapter.info;
  return {
    device,
    info: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      dawnBackend: choice.kind === 'software' ? 'opengles' : 'vulkan',
      software: choice.kind === 'software',
    },
    close() {
      if (closed) return;
      closed = true;
      device.destroy();
    },
  };
}

/** "NVIDIA H200 (vendor nvidia, architecture hopper, Dawn vulkan)". */
export function describeAdapter(name: string, info: AdapterInfo): string {
  const parts = [
    info.vendor && `vendor ${info.vendor}`,
    info.architecture && `architecture ${info.architecture}`,
    info.device && `device ${info.device}`,
    `Dawn ${info.dawnBackend}`,
    info.software && 'software adapter: for tests only',
  ].filter(Boolean);
  return `${name} (${parts.join(', ')})`;
}

/**
 * Lists Dawn's WebGPU adapters of one kind and prints them as one JSON line; run as a child
 * process by probeAdapters() (webgpu.ts), which keeps what Dawn writes on stderr as the reason.
 *   node webgpu-probe.js hardware|software
 *
 * Dawn's node binding has no enumeration call; asking for an adapter name that cannot match
 * makes it reject with the list of every adapter it found ("Available adapters: ..."), and
 * resolve null when it found none.
 */
/// <reference types="@webgpu/types" />
import { dawnFlags, parseAdapterList, type AdapterKind } from './webgpu.js';

const NO_SUCH_ADAPTER = '\u0001cohort-list-adapters';

async function main(): Promise<void> {
  const kind = process.argv[2] as AdapterKind;
  if (kind !== 'hardware' && kind !== 'software') throw new Error(`usage: webgpu-probe hardware|software`);
  const { create } = (await import('webgpu')) as unknown as { create(flags: string[]): GPU };
  const { flags, featureLevel } = dawnFlags(kind);
  const gpu = create([...flags, `adapter=${NO_SUCH_ADAPTER}`]);
  let adapters: { backend: string; name: string }[] = [];
  let reason = '';
  try {
    const adapter = await gpu.requestAdapter({ featureLevel } as GPURequestAdapterOptions);
    if (adapter) reason = 'Dawn ignored the adapter filter';
  } catch (error) {
    const message = String((error as Error)?.message ?? error);
    adapters = parseAdapterList(message);
    if (adapters.length === 0) reason = message.split('\n')[0];
  }
  process.stdout.write(`${JSON.stringify({ adapters, reason })}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${(error as Error)?.message ?? error}\n`);
    process.exit(1);
  },
);

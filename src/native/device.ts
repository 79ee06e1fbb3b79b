// Which backend runs the work: `device` (config key / --device flag) is cpu, cuda or auto. auto
// takes the GPU when the CUDA backend sees one; cuda without one is an error saying why.
import { availableParallelism } from 'node:os';
import { native } from './binding.js';
import type { Device } from './types.js';
import { SftError } from '../errors.js';

export type DeviceChoice = Device | 'auto';

/** Why the cuda backend cannot run here, or undefined when it can. */
export function cudaUnavailable(): string | undefined {
  const b = native().backends();
  if (!b.cudaBuilt) return 'this build has no CUDA backend (nvcc was not found when it was installed)';
  if (b.cudaDevices === 0) return `no usable CUDA device (${b.cudaError ?? 'none found'})`;
  return undefined;
}

/** The device a run computes on. `print` receives one line naming it (and the card). */
export function resolveDevice(choice: DeviceChoice, print: (line: string) => void, threads?: number): Device {
  const why = cudaUnavailable();
  if (choice === 'cuda' && why) throw new SftError(`device "cuda": ${why}; use device "cpu" or "auto"`);
  const device: Device = choice === 'cpu' || why ? 'cpu' : 'cuda';
  print(`device: ${describeDevice(device, threads)}`);
  return device;
}

/** "cuda (NVIDIA H200, 139.8 GiB free of 140.4 GiB)" / "cpu (2 threads)". */
export function describeDevice(device: Device, threads?: number): string {
  if (device === 'cpu') return `cpu (${threads || availableParallelism()} threads)`;
  const b = native().backends();
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;
  return b.cudaName ? `cuda (${b.cudaName}, ${gib(b.cudaFreeBytes ?? 0)} free of ${gib(b.cudaTotalBytes ?? 0)})` : 'cuda';
}

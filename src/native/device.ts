// Which backend runs the work: `device` (config key / --device flag) is cpu, cuda or auto.
// The CUDA backend's kernels are not in this build yet (issue 3): cuda is refused with the reason,
// and auto says once when it finds a GPU that it is not using.
import { native } from './binding.js';
import { SftError } from '../errors.js';

export type Device = 'cpu' | 'cuda' | 'auto';

/** Resolve the device; `notice` receives a one-line message when auto falls back to the CPU. */
export function resolveDevice(device: Device, notice: (line: string) => void): 'cpu' {
  const b = native().backends();
  if (device === 'cuda') {
    const why = !b.cudaBuilt ? 'this build has no CUDA backend (nvcc was not found at install)' : b.cudaDevices === 0 ? `no usable CUDA device (${b.cudaError ?? 'none found'})` : 'the CUDA kernels are not implemented yet in this build';
    throw new SftError(`device "cuda": ${why}; use device "cpu" or "auto"`);
  }
  if (device === 'auto' && b.cudaDevices > 0) notice(`note: found ${b.cudaDevices} CUDA device(s), but the CUDA kernels are not implemented yet in this build; running on the CPU`);
  return 'cpu';
}

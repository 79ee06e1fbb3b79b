// The --device flag every command that runs the engine shares, and its resolution (one line on
// stderr naming the device, so stdout stays the command's output).
import type { Argv } from 'yargs';
import type { Device } from '../native/types.js';

export type DeviceFlag = 'cpu' | 'cuda' | 'auto';

export function withDevice<T>(y: Argv<T>): Argv<T & { device: DeviceFlag }> {
  return y.option('device', {
    choices: ['cpu', 'cuda', 'auto'] as const,
    default: 'auto' as const,
    describe: 'Where the engine computes: cuda, cpu, or auto (cuda when a GPU is usable)',
  }) as Argv<T & { device: DeviceFlag }>;
}

export async function deviceFromFlag(flag: DeviceFlag): Promise<Device> {
  const { resolveDevice } = await import('../native/device.js');
  return resolveDevice(flag, (l) => process.stderr.write(`[${l}]\n`));
}

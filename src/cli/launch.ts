// `sft train --nproc-per-node N`: N local ranks under mpirun (Open MPI), the way clusters launch.
import { spawn, spawnSync } from 'node:child_process';
import { SftError } from '../errors.js';

/** mpirun's arguments for N ranks on this machine: as root it needs --allow-run-as-root; a
 *  container often shows fewer "slots" than cores (--oversubscribe); no core binding (each rank
 *  runs its own thread pool, `threads`). */
export function mpiRunArgs(n: number): string[] {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return ['-np', String(n), ...(root ? ['--allow-run-as-root'] : []), '--oversubscribe', '--bind-to', 'none', '--mca', 'btl', 'self,vader,tcp'];
}

/** Runs this same command (argv without --nproc-per-node) as N ranks; resolves with the exit code. */
export async function launchLocal(n: number, argv: string[]): Promise<number> {
  if (spawnSync('mpirun', ['--version']).error) {
    throw new SftError('--nproc-per-node needs mpirun (Open MPI), which is not installed: apt-get install openmpi-bin libopenmpi-dev (Debian/Ubuntu), then rebuild sft (npm run build:native) so it builds sft_mpi.so');
  }
  const child = spawn('mpirun', [...mpiRunArgs(n), process.execPath, ...process.execArgv, ...argv], { stdio: 'inherit' });
  // Ctrl-C reaches every rank (one process group): they stop at the same step, rank 0 saves the
  // checkpoint. This process waits for them; a SIGTERM sent to it alone goes on to mpirun.
  const onInt = () => {};
  const onTerm = () => child.kill('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return new Promise((res) =>
    child.on('exit', (code, sig) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      res(code ?? (sig ? 128 + 15 : 1));
    }),
  );
}

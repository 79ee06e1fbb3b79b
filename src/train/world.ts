// The data-parallel world a training run belongs to (issue 16; docs/SCALING.md): under mpirun/srun
// every rank runs the same recipe on its own rows of each step's global batch; the communicator
// (native/comm) sums target counts, losses and gradients over the ranks. Rank 0 alone prints,
// logs and writes; without a launcher the world is one rank and every collective is the identity.
import { native as addon } from '../native/binding.js';
import type { CommWorld, Device } from '../native/types.js';
import { SftError } from '../errors.js';

export interface World extends CommWorld {
  /** Rank 0: the one that prints, logs and writes output_dir. */
  main: boolean;
  /** Each value summed over the ranks (every rank gets the same sums). */
  sum(values: number[]): number[];
  barrier(): void;
  /** Stops every rank of the job, after this rank said why on stderr. */
  abort(why: string): never;
}

export function joinWorld(device: Device): World {
  let w: CommWorld;
  try {
    w = addon().comm.init({ device });
  } catch (err) {
    throw new SftError(`data parallel: ${(err as Error).message}`);
  }
  const comm = addon().comm;
  return {
    ...w,
    main: w.rank === 0,
    sum(values) {
      if (w.size === 1) return values;
      const a = Float64Array.from(values);
      comm.allReduceSum(a);
      return Array.from(a);
    },
    barrier() {
      if (w.size > 1) comm.barrier();
    },
    abort(why): never {
      process.stderr.write(`rank ${w.rank} of ${w.size}: ${why}\nstopping every rank (the last complete checkpoint in output_dir is intact)\n`);
      return comm.abort(1);
    },
  };
}

/** Rank `rank`'s rows of a global micro-batch: [rank x rows, (rank + 1) x rows), padded as the whole
 *  batch is, so the dropout masks (keyed by element index) are the one-rank run's. */
export function shardRows<B extends { ids: Int32Array; labels: Int32Array; seqLen: number; indices: number[] }>(b: B, rank: number, rows: number): B {
  const from = Math.min(b.indices.length, rank * rows), to = Math.min(b.indices.length, (rank + 1) * rows);
  const T = b.seqLen;
  return { ...b, ids: b.ids.subarray(from * T, to * T), labels: b.labels.subarray(from * T, to * T), indices: b.indices.slice(from, to) };
}

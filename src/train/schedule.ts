// Learning-rate schedules and step counts, with HF transformers' formulas
// (optimization.py get_scheduler lambdas; Trainer's step arithmetic) so a run here follows the
// same curve as the same config under Firefly.
//
// Step numbering, as in HF: `step` is the number of optimizer updates already done, so update
// number k (1-based) uses lrAt(k - 1). With warmup the first update therefore uses lr 0. HF's
// logged "learning_rate" after update k is lrAt(k): the rate the next update will use.
import { SftError } from '../errors.js';
import type { LrSchedulerType } from '../config/schema.js';

export interface LrScheduleOptions {
  type: LrSchedulerType;
  baseLr: number;
  /** Warmup length in optimizer steps (see resolveWarmup). */
  warmupSteps: number;
  /** Total optimizer steps of the run (see totalTrainSteps). */
  totalSteps: number;
}

/** The learning rate for the optimizer update that follows `step` completed updates. */
export function lrAt(step: number, o: LrScheduleOptions): number {
  return o.baseLr * lrFactor(step, o);
}

function lrFactor(step: number, { type, warmupSteps: w, totalSteps: n }: LrScheduleOptions): number {
  switch (type) {
    case 'constant':
      return 1; // HF ignores warmup for "constant"
    case 'constant_with_warmup':
      return step < w ? step / Math.max(1, w) : 1;
    case 'linear':
      if (step < w) return step / Math.max(1, w);
      return Math.max(0, (n - step) / Math.max(1, n - w));
    case 'cosine': {
      if (step < w) return step / Math.max(1, w);
      const progress = (step - w) / Math.max(1, n - w);
      const numCycles = 0.5; // HF default: half a cosine wave, from 1 down to 0
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
    }
    default:
      throw new SftError(`lr_scheduler_type "${type}" is not implemented yet in this build; use constant, constant_with_warmup, linear or cosine`);
  }
}

/**
 * Warmup steps from the config. warmup_steps >= 1 counts steps; a warmup_steps in (0, 1) is a
 * ratio of the total (HF 5); warmup_steps 0 falls back to warmup_ratio (HF 4).
 * Either ratio rounds up: ceil(ratio * totalSteps).
 */
export function resolveWarmup(warmupSteps: number, warmupRatio: number, totalSteps: number): number {
  if (warmupSteps >= 1) return Math.trunc(warmupSteps);
  if (warmupSteps > 0) return Math.ceil(totalSteps * warmupSteps);
  return Math.ceil(totalSteps * warmupRatio);
}

/** logging_steps / save_steps / eval_steps: a value below 1 is a ratio of the total steps (rounded up). */
export function resolveInterval(value: number, totalSteps: number): number {
  return value < 1 ? Math.ceil(totalSteps * value) : Math.trunc(value);
}

/**
 * Optimizer steps in the run, as HF's Trainer counts them: max_steps when > 0, otherwise
 * ceil(num_train_epochs * updates per epoch), where an epoch's last partial accumulation
 * still makes an update: ceil(batches / gradient_accumulation_steps), at least 1.
 */
export function totalTrainSteps(o: {
  maxSteps: number;
  numTrainEpochs: number;
  batchesPerEpoch: number;
  gradientAccumulationSteps: number;
}): number {
  if (o.maxSteps > 0) return o.maxSteps;
  const updatesPerEpoch = Math.max(Math.ceil(o.batchesPerEpoch / o.gradientAccumulationSteps), 1);
  return Math.ceil(o.numTrainEpochs * updatesPerEpoch);
}

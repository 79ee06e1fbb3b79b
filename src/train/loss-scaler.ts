// Dynamic loss scaling, what `fp16: true` means in HF's Trainer (torch.amp.GradScaler through
// accelerate): the loss is multiplied by `scale` before backward so small fp16 gradients do not
// flush to zero; the optimizer unscales them first (AdamWOptions.inverseScale). When any gradient
// is inf/NaN the step is skipped and the scale halves; after `growthInterval` steps in a row
// without one it doubles. The scale is an fp32 value (GradScaler keeps it in an fp32 tensor), so
// every change is rounded to fp32, and a growth that would overflow fp32 is not made.
import { SftError } from '../errors.js';

export interface LossScalerOptions {
  initScale?: number;
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval?: number;
}

/** What a checkpoint keeps (trainer_state.json "grad_scaler"), so a resumed run scales as the
 *  uninterrupted one would. */
export interface LossScalerState {
  scale: number;
  /** Non-overflow steps in a row since the last growth or backoff (GradScaler's _growth_tracker). */
  growth_tracker: number;
  /** Optimizer steps skipped for inf/NaN gradients since the start. */
  skipped_steps: number;
}

// GradScaler's defaults (and accelerate's, which HF's Trainer uses for fp16).
export const GRAD_SCALER_DEFAULTS = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 } as const;

export class LossScaler {
  scale: number;
  growthTracker = 0;
  skippedSteps = 0;
  private readonly growthFactor: number;
  private readonly backoffFactor: number;
  private readonly growthInterval: number;

  constructor(opts: LossScalerOptions = {}, state?: LossScalerState) {
    const o = { ...GRAD_SCALER_DEFAULTS, ...opts };
    this.growthFactor = o.growthFactor, this.backoffFactor = o.backoffFactor, this.growthInterval = o.growthInterval;
    this.scale = Math.fround(o.initScale);
    if (state) this.scale = state.scale, this.growthTracker = state.growth_tracker, this.skippedSteps = state.skipped_steps;
  }

  /** The multiplier of 1 / loss_scale the optimizer applies (GradScaler: fp64 reciprocal, rounded to fp32). */
  get inverse(): number {
    return Math.fround(1 / this.scale);
  }

  /** After each step: `overflow` is whether the unscaled gradients held an inf/NaN (the step was
   *  skipped). GradScaler.update's rule (_amp_update_scale_). */
  update(overflow: boolean): void {
    if (overflow) {
      this.skippedSteps++;
      this.scale = Math.fround(this.scale * this.backoffFactor);
      this.growthTracker = 0;
      // GradScaler would go on halving; a scale that reached the smallest fp32 values can no longer
      // make any gradient finite: the overflow is divergence (NaN in the model), not fp16's range.
      if (this.scale < 2 ** -100) throw new SftError(`fp16 loss scaling: every gradient is inf/NaN at every loss scale down to ${this.scale} (${this.skippedSteps} steps skipped); the model diverged. Lower learning_rate, or check the data`);
      return;
    }
    this.growthTracker++;
    if (this.growthTracker === this.growthInterval) {
      const grown = Math.fround(this.scale * this.growthFactor);
      if (Number.isFinite(grown)) this.scale = grown;
      this.growthTracker = 0;
    }
  }

  state(): LossScalerState {
    return { scale: this.scale, growth_tracker: this.growthTracker, skipped_steps: this.skippedSteps };
  }
}

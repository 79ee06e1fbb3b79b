// What the loop says when an AdamW update left the trainable weights non-finite: the loss and the
// gradient norm were finite, so only a check after the update sees it (adam_epsilon 0 over an
// exactly-zero gradient is 0/0; a learning rate far too large overflows).
import type { TrainConfig } from '../config/schema.js';
import { SftError } from '../errors.js';
import { listCheckpoints } from './checkpoint.js';

/** `step`: 1-based, the step whose update failed; `completed`: steps done before it. */
export function nonFiniteUpdate(cfg: TrainConfig, step: number, completed: number): SftError {
  // The newest checkpoint of this trajectory: one written later by an earlier, interrupted run of
  // this output_dir is not on the way to this step.
  const good = listCheckpoints(cfg.output_dir).filter((c) => c.step <= completed).pop();
  const where = good
    ? `the last good checkpoint is ${good.dir} (continue from it with --resume checkpoint-${good.step} once the setting below is changed)`
    : 'no checkpoint was written';
  const what = cfg.adam_epsilon === 0
    ? 'adam_epsilon is 0: a gradient that is exactly 0 (LoRA A at the first step, the embedding rows of tokens the data never holds) makes AdamW divide 0 by 0; set adam_epsilon to 1e-8, the default'
    : `lower learning_rate (now ${cfg.learning_rate})${cfg.max_grad_norm === 0 ? ' or clip gradients (max_grad_norm 1.0; it is 0, no clipping)' : ''}`;
  return new SftError(`step ${step}: the AdamW update made the trainable weights non-finite (NaN or infinite). Training stopped; nothing was saved as the final result, and ${where}. To train again, ${what}.`);
}

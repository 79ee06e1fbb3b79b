// The evaluation keys mean what they mean in HF's TrainingArguments (transformers 5.x
// __post_init__): eval_strategy / HF 4.x's evaluation_strategy, eval_steps falling back to
// logging_steps, do_eval, metric_for_best_model / greater_is_better defaults, and the rules
// load_best_model_at_end and save_strategy "best" put on the other keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configFromObject } from '../../src/config/loader.js';
import { evalPlan, epochEndsAt } from '../../src/train/evaluation.js';
import { SftError } from '../../src/errors.js';

const BASE = { output_dir: 'out', model_name_or_path: 'm', train_file: 'd.jsonl', max_seq_length: 64, eval_file: 'e.jsonl' };
const load = (extra: Record<string, unknown>) => configFromObject({ ...BASE, ...extra }, [], 'x.json');
function fails(extra: Record<string, unknown>, ...parts: string[]): void {
  assert.throws(() => load(extra), (err: unknown) => {
    assert.ok(err instanceof SftError, String(err));
    for (const p of parts) assert.ok(err.message.includes(p), `${JSON.stringify(err.message)} lacks ${JSON.stringify(p)}`);
    return true;
  });
}

test('evaluation_strategy (HF 4.x) and eval_strategy (HF 5) are one key; do_eval follows them', () => {
  const old = load({ evaluation_strategy: 'steps', eval_steps: 50 });
  assert.equal(old.config.eval_strategy, 'steps');
  assert.equal(old.config.do_eval, true);
  assert.deepEqual(old.notices, []);
  assert.equal(load({ eval_strategy: 'epoch' }).config.eval_strategy, 'epoch');
  assert.equal(load({ eval_strategy: 'steps', evaluation_strategy: 'steps' }).config.eval_strategy, 'steps');
  fails({ eval_strategy: 'steps', evaluation_strategy: 'epoch' }, 'evaluation_strategy "epoch" and eval_strategy "steps" disagree');
  // Firefly's write-up: do_eval and evaluation_strategy "no" load without a word.
  const plain = load({ eval_file: '', do_eval: false, evaluation_strategy: 'no' });
  assert.deepEqual(plain.notices, []);
  assert.equal(plain.config.do_eval, false);
});

test('evaluation needs eval_file; an eval_file or eval_steps that would not be used is said', () => {
  fails({ eval_file: '', eval_strategy: 'steps' }, 'eval_strategy "steps" needs eval_file');
  fails({ eval_file: '', do_eval: true }, 'do_eval true needs eval_file');
  assert.ok(load({}).notices.some((n) => n.includes('eval_file="e.jsonl" is not evaluated')));
  assert.ok(load({ eval_strategy: 'epoch', eval_steps: 10 }).notices.some((n) => n.includes('eval_steps=10 only applies to eval_strategy "steps"')));
  assert.deepEqual(load({ do_eval: true }).notices, []);
});

test('eval_steps: null falls back to logging_steps, a ratio is of the total steps; HF 5 also evaluates after the last step', () => {
  const never = () => false;
  const at = (extra: Record<string, unknown>, total: number, ends = never) => {
    const plan = evalPlan(load(extra).config, total, ends);
    return Array.from({ length: total }, (_, i) => i + 1).filter((d) => plan.at(d));
  };
  assert.deepEqual(at({ eval_strategy: 'steps', logging_steps: 4 }, 10), [4, 8, 10]);
  assert.deepEqual(at({ eval_strategy: 'steps', eval_steps: 0.25, logging_steps: 1 }, 10), [3, 6, 9, 10]);
  assert.deepEqual(at({ eval_strategy: 'steps', eval_steps: 5 }, 10), [5, 10]);
  assert.deepEqual(at({ do_eval: true }, 10), [10]);
  assert.deepEqual(at({}, 10), []);
  // epoch: at the step whose micro-batches finish an epoch (5 batches per epoch, 2 per step).
  assert.deepEqual(at({ eval_strategy: 'epoch' }, 7, (d) => epochEndsAt(d, 2, 5)), [3, 5, 7]);
});

test('metric_for_best_model / greater_is_better defaults, and the metrics sft computes', () => {
  const lb = load({ eval_strategy: 'steps', save_strategy: 'steps', eval_steps: 10, save_steps: 20, load_best_model_at_end: true }).config;
  assert.equal(lb.metric_for_best_model, 'loss');
  assert.equal(lb.greater_is_better, false);
  assert.equal(load({ eval_strategy: 'steps', save_strategy: 'best' }).config.metric_for_best_model, 'loss');
  assert.equal(load({ eval_strategy: 'steps', metric_for_best_model: 'eval_loss' }).config.greater_is_better, false);
  assert.equal(load({}).config.metric_for_best_model, null);
  fails({ eval_strategy: 'steps', metric_for_best_model: 'accuracy' }, 'metric_for_best_model "accuracy"', 'eval_loss only');
});

test('load_best_model_at_end: the save and eval strategies must match, save_steps a multiple of eval_steps (HF)', () => {
  fails({ load_best_model_at_end: true }, 'load_best_model_at_end needs evaluation during training');
  fails({ load_best_model_at_end: true, eval_strategy: 'epoch', save_strategy: 'steps' }, 'save_strategy to match eval_strategy', '"steps" and "epoch"');
  fails({ load_best_model_at_end: true, eval_strategy: 'steps', eval_steps: 30, save_steps: 50 }, 'save_steps (50) to be a multiple of eval_steps (30)');
  fails({ load_best_model_at_end: true, eval_strategy: 'steps', logging_steps: 30, save_steps: 50 }, 'eval_steps (30, from logging_steps)');
  fails({ load_best_model_at_end: true, eval_strategy: 'steps', eval_steps: 0.1, save_steps: 50 }, 'multiple of eval_steps');
  assert.ok(load({ load_best_model_at_end: true, eval_strategy: 'steps', eval_steps: 0.1, save_steps: 0.2 }));
  assert.ok(load({ load_best_model_at_end: true, eval_strategy: 'steps', eval_steps: 25, save_steps: 50 }));
  assert.ok(load({ load_best_model_at_end: true, eval_strategy: 'epoch', save_strategy: 'epoch' }));
  assert.ok(load({ load_best_model_at_end: true, eval_strategy: 'steps', eval_steps: 30, save_strategy: 'best' }));
  fails({ save_strategy: 'best', eval_file: '' }, 'save_strategy "best"', 'eval_strategy is "no"');
});

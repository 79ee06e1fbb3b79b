// Evaluation during training (eval_file, eval_strategy, eval_steps): eval_loss at HF's steps, equal
// to the engine's own cross-entropy of each checkpoint's adapter over the eval samples; training
// unchanged by it; the best checkpoint named, kept by rotation, loaded at the end; resume exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train, shiftLabels } from '../../src/train/recipe.js';
import { applyLoraAdapter, loadBase } from '../../src/model/load.js';
import { readLoraAdapter } from '../../src/io/peft.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { prepareDataset } from '../../src/data/dataset.js';
import { getTemplate } from '../../src/data/templates.js';
import { hfTags } from '../../src/log/reporters.js';
import { plotSvg, readRun } from '../../src/log/plot.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-evaluation-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 400, seed: 4, maxPosition: 128, force: true });
const lines = (rows: string[][]) => rows.map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n';
const trainFile = join(root, 'train.jsonl');
writeFileSync(trainFile, lines(Array.from({ length: 8 }, (_, i) => [`question ${i}?`, `answer number ${i * 7}.`])));
// Answers of different lengths: a token-weighted mean differs from a mean of per-batch means.
const evalFile = join(root, 'eval.jsonl');
writeFileSync(evalFile, lines([['what is 3?', 'three'], ['and 12?', 'twelve, which is a longer answer than the others'], ['say hi', 'hi'], ['count', 'one two three four five'], ['end', 'done.']]));

const base = {
  model_name_or_path: modelDir, train_file: trainFile, template_name: 'default', max_seq_length: 48,
  per_device_train_batch_size: 2, gradient_accumulation_steps: 1, max_steps: 8, learning_rate: 3e-3,
  lr_scheduler_type: 'constant', lora_rank: 4, lora_alpha: 8, lora_dropout: 0.1, logging_steps: 1,
  save_steps: 3, seed: 13, disable_tqdm: true, train_mode: 'lora',
  eval_file: evalFile, evaluation_strategy: 'steps', eval_steps: 3, per_device_eval_batch_size: 3,
};

async function run(over: Record<string, unknown>, opts: { resume?: string; stopAtStep?: number } = {}) {
  const { config } = configFromObject({ ...base, ...over });
  const out = sink();
  const printed: string[] = [];
  // Stop once the plain progress line of step N is out (deterministic: no timing involved).
  const stopAt = opts.stopAtStep;
  const r = await train(config, {
    print: (l) => printed.push(l), stream: out, resume: opts.resume,
    shouldStop: () => stopAt !== undefined && out.text().includes(`step ${stopAt}/`),
  });
  return { ...r, printed, text: out.text() };
}

const records = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
const evalRecords = (dir: string) => records(dir).filter((r) => 'eval_loss' in r);

/** The reference: the engine's fused cross-entropy (forward + backward with a zero loss scale), one
 *  unpadded sample at a time, over the eval file encoded as training encodes its data. */
async function referenceEvalLoss(adapterDir: string): Promise<number> {
  const { model, native } = await loadBase(modelDir);
  applyLoraAdapter(model, adapterDir);  // dropout 0: the eval-mode forward
  const tok = await loadTokenizer(modelDir);
  const data = await prepareDataset({ file: evalFile, tok, template: getTemplate('default'), maxSeqLength: 48, vocabSize: native.vocabSize, cacheDir: join(root, 'ref-cache') });
  let sum = 0, tokens = 0;
  for (let i = 0; i < data.size; i++) {
    const { inputIds, labels } = data.get(i);
    const r = await model.forwardBackward(inputIds, shiftLabels(labels, 1, inputIds.length), 1, inputIds.length, 0, 0);
    sum += r.lossSum;
    tokens += r.tokens;
  }
  data.remove();
  return sum / tokens;
}

test('eval_loss is logged at every eval_steps and after the last step, equal to the cross-entropy of that step\'s weights', async () => {
  const r = await run({ output_dir: join(root, 'steps') });
  const evals = evalRecords(r.outputDir);
  assert.deepEqual(evals.map((e) => e.step), [3, 6, 8]);
  for (const e of evals) {
    assert.ok(e.epoch > 0 && e.eval_runtime >= 0 && e.eval_samples_per_second > 0 && e.eval_steps_per_second > 0, JSON.stringify(e));
    // eval_steps_per_second counts batches of per_device_eval_batch_size: 5 samples = 2 batches.
    assert.ok(Math.abs(e.eval_samples_per_second / e.eval_steps_per_second - 2.5) < 0.05, JSON.stringify(e));
  }
  for (const [e, dir] of [[evals[0], join(r.outputDir, 'checkpoint-3')], [evals[1], join(r.outputDir, 'checkpoint-6')], [evals[2], r.outputDir]] as const) {
    const want = await referenceEvalLoss(dir);
    assert.ok(Math.abs(e.eval_loss - want) < 1e-5 * want, `step ${e.step}: logged ${e.eval_loss}, reference ${want}`);
  }
  // TensorBoard / wandb tags as HF's rewrite_logs writes them.
  assert.ok('eval/loss' in hfTags(evals[0]) && 'eval/runtime' in hfTags(evals[0]));
  // The progress lines and loss.svg show it beside the training loss.
  assert.match(r.text, /step 3: eval_loss \d\.\d{4} over \d+ tokens of 5 samples/);
  assert.match(r.text, /step 4\/8 \| epoch 1\.00 \| loss \d\.\d{4} \| grad_norm \d+\.\d{3} \| lr 3\.00e-03 \| eval_loss \d\.\d{4} \|/);
  const svg = readFileSync(join(r.outputDir, 'loss.svg'), 'utf8');
  assert.equal((svg.match(/<polyline class="eval"/g) ?? []).length, 1);
  assert.match(svg, /eval loss \(dashed\) [\d.]+ at step 8/);
  assert.ok(r.printed.some((l) => /^Evaluation: .*eval\.jsonl every 3 steps and after the last \(5 samples/.test(l)), r.printed.join('\n'));
  // per_device_eval_batch_size 3 > the training batch 2: passes stay within the run's memory plan.
  assert.deepEqual(r.allocations!.afterTraining, r.allocations!.afterPlan, 'no allocation for evaluation');
});

test('a run with evaluation trains exactly as the same run without it', async () => {
  const withEval = await run({ output_dir: join(root, 'with') });
  const without = await run({ output_dir: join(root, 'without'), eval_file: '', evaluation_strategy: null, eval_steps: null });
  assert.deepEqual(withEval.losses, without.losses);
  const a = readLoraAdapter(withEval.outputDir).tensors, b = readLoraAdapter(without.outputDir).tensors;
  for (let i = 0; i < a.length; i++) assert.deepEqual(a[i].data, b[i].data, a[i].name);
  assert.equal(evalRecords(without.outputDir).length, 0);
  assert.ok(!/eval_loss/.test(without.text));
});

test('the best checkpoint is named, recorded in trainer_state.json, kept by rotation and loaded at the end', async () => {
  // greater_is_better on a loss makes the best the highest eval_loss: here an early step, so that
  // rotation (save_total_limit 1) would remove it if it were not protected.
  const dir = join(root, 'best');
  const r = await run({
    output_dir: dir, eval_steps: 2, save_steps: 2, save_total_limit: 1, learning_rate: 1e-2,
    load_best_model_at_end: true, greater_is_better: true, eval_file: trainFile,
  });
  const evals = evalRecords(dir);
  const best = evals.reduce((a, b) => (b.eval_loss > a.eval_loss ? b : a));
  assert.ok(best.step < 6, `precondition: the best (${best.step}) is a checkpoint rotation would remove`);
  const bestDir = join(dir, `checkpoint-${best.step}`);
  assert.ok(existsSync(bestDir), 'the best checkpoint survives rotation');
  assert.equal(r.best?.step, best.step);
  assert.equal(r.best?.checkpoint, bestDir);
  assert.ok(r.printed.some((l) => l.includes(`Best checkpoint by eval_loss: ${bestDir}`)), r.printed.join('\n'));
  // HF: with save_total_limit 1, only the best checkpoint remains at the end.
  assert.ok(!existsSync(join(dir, 'checkpoint-6')));
  const state = JSON.parse(readFileSync(join(bestDir, 'trainer_state.json'), 'utf8'));
  assert.equal(state.best_model_checkpoint, bestDir);
  assert.equal(state.best_global_step, best.step);
  assert.ok(Math.abs(state.best_metric - best.eval_loss) < 1e-12);
  // load_best_model_at_end: the final adapter is the best checkpoint's.
  const fin = readLoraAdapter(dir).tensors, cp = readLoraAdapter(bestDir).tensors;
  for (let i = 0; i < fin.length; i++) assert.deepEqual(fin[i].data, cp[i].data, fin[i].name);
});

test('save_strategy "best" saves a checkpoint at each evaluation that improves eval_loss, and only then', async () => {
  const dir = join(root, 'save-best');
  const r = await run({ output_dir: dir, eval_steps: 2, save_strategy: 'best', eval_file: trainFile, learning_rate: 1e-2 });
  const evals = evalRecords(dir);
  let best = Infinity;
  for (const e of evals.filter((x) => x.step < 8)) {
    const improved = e.eval_loss < best;
    best = Math.min(best, e.eval_loss);
    assert.equal(existsSync(join(dir, `checkpoint-${e.step}`)), improved, `step ${e.step}`);
  }
  assert.ok(r.best);
});

test('stopped and resumed with evaluation = uninterrupted: losses, eval_loss lines and the best, bit for bit', async () => {
  const over = { eval_steps: 2, save_steps: 4, save_total_limit: 2 };
  const whole = await run({ output_dir: join(root, 'whole'), ...over });
  const dir = join(root, 'split');
  const first = await run({ output_dir: dir, ...over }, { stopAtStep: 5 });
  assert.equal(first.interrupted, true);
  const second = await run({ output_dir: dir, ...over }, { resume: 'latest' });
  assert.deepEqual(second.losses, whole.losses);
  const speed = ['tokens_per_second', 'eval_runtime', 'eval_samples_per_second', 'eval_steps_per_second'];
  const strip = (d: string) => records(d).map((rec) => Object.fromEntries(Object.entries(rec).filter(([k]) => !speed.includes(k))));
  assert.deepEqual(strip(dir), strip(whole.outputDir));
  assert.deepEqual(second.best, { ...whole.best, checkpoint: whole.best?.checkpoint?.replace(join(root, 'whole'), dir) });
  const state = (d: string) => JSON.parse(readFileSync(join(d, 'checkpoint-4', 'trainer_state.json'), 'utf8'));
  assert.deepEqual([state(dir).best_metric, state(dir).best_global_step], [state(whole.outputDir).best_metric, state(whole.outputDir).best_global_step]);
});

test('loss.svg: a run without evaluation draws no eval line', () => {
  const svg = plotSvg([readRun(join(root, 'without'))]);
  assert.ok(!svg.includes('class="eval"'));
});

test('eval_strategy and save_strategy "epoch": evaluated and saved at each epoch end (not at save_steps)', async () => {
  // 8 samples in batches of 2: an epoch is 4 steps; 10 steps end epochs at 4 and 8, then the run.
  const dir = join(root, 'epoch');
  await run({ output_dir: dir, max_steps: 10, eval_strategy: 'epoch', evaluation_strategy: null, eval_steps: null, save_strategy: 'epoch', save_steps: 3 });
  assert.deepEqual(evalRecords(dir).map((e) => e.step), [4, 8, 10]);
  assert.ok(existsSync(join(dir, 'checkpoint-4')) && existsSync(join(dir, 'checkpoint-8')));
  assert.ok(!existsSync(join(dir, 'checkpoint-3')) && !existsSync(join(dir, 'checkpoint-6')));
});

test('sft plot --metric eval_loss draws the evaluations alone', () => {
  const svg = plotSvg([readRun(join(root, 'steps'))], { metric: 'eval_loss' });
  assert.match(svg, /last eval loss [\d.]+ at step 8/);
});

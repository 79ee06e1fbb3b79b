// The scoring path end to end: a tiny model trained with the LoRA recipe to memorise the answers of
// one C-Eval subject's val set must score >= 90 % on it through `sft eval`.
//
// How training data and eval prompts line up. The completion prompt is raw text ending in "答案：",
// while `sft train` always wraps samples in a chat template, so a model trained by it never sees
// that raw prompt. Eval's chat mode (--template, C-Eval's prompt for chat models) renders each
// question as a user turn of the same Firefly template, the header as the system message and the
// letter as the assistant's reply. The training records below are exactly that rendering, zero-shot:
// {"system": header, "conversation": [{"human": question+options+"答案：", "assistant": letter}]}.
// `sft eval --template qwen --shots 0` then feeds the very context the model was trained on and
// reads the logits where it learnt to write the letter. With five shots the prompt adds solved
// examples the model never saw; that is not what this test is about.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadModel } from '../../src/model/load.js';
import { loadSubjects } from '../../src/eval/datasets.js';
import { PROMPT_STYLES } from '../../src/eval/prompts.js';
import { planEval, runEval } from '../../src/eval/run.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';

const CEVAL = join(packageRoot, '..', 'shared', 'ceval');
const skip = existsSync(CEVAL) ? false : `C-Eval data not found at ${CEVAL}`;
// 23 short questions, answers spread over A-D (at most 7 alike): guessing one letter gets <= 30 %.
const SUBJECT = 'chinese_language_and_literature';

test('a model trained to memorise a subject\'s val answers scores >= 90 % on it; cached and full scoring agree', { skip, timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-eval-memorise-'));
  const [subject] = loadSubjects({ benchmark: 'ceval', dir: CEVAL, split: 'val', only: [SUBJECT] });
  const style = PROMPT_STYLES.ceval;
  const system = style.header(subject).trimEnd();
  const records = subject.questions.map((q) => ({ system, conversation: [{ human: style.body(q), assistant: q.answer! }] }));
  const dataFile = join(root, 'train.jsonl');
  writeFileSync(dataFile, records.map((r) => JSON.stringify(r)).join('\n') + '\n');

  const modelDir = join(root, 'model');
  const texts = records.map((r) => `${r.system}\n${r.conversation[0].human}`);
  initModel({ arch: 'qwen2', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 768, seed: 11, maxPosition: 512, force: true, texts });
  const outDir = join(root, 'adapter');
  const { config } = configFromObject({
    output_dir: outDir,
    model_name_or_path: modelDir,
    train_file: dataFile,
    template_name: 'qwen',
    train_mode: 'lora',
    max_seq_length: 160,
    per_device_train_batch_size: 8,
    gradient_accumulation_steps: 1,
    max_steps: 150,
    learning_rate: 5e-3,
    lr_scheduler_type: 'cosine',
    warmup_steps: 5,
    lora_rank: 16,
    lora_alpha: 32,
    lora_dropout: 0,
    logging_steps: 50,
    save_strategy: 'no',
    seed: 1,
    disable_tqdm: true,
  });
  await train(config, { print: () => {}, stream: sink() });

  const loaded = await loadModel({ modelDir, adapterDir: outDir });
  const plan = planEval({ benchmark: 'ceval', dir: CEVAL, split: 'val', subjects: [SUBJECT], shots: 0, template: 'qwen', batchSize: 1 });
  const run = { model: loaded.model, tok: loaded.tok, vocabSize: loaded.native.vocabSize, maxContext: 512, bos: false, modelDir, adapterDir: outDir, stream: sink() };
  const cached = await runEval(plan, run);
  const [r] = cached.subjects;
  assert.equal(r.questions, 23);
  assert.ok(r.accuracy! >= 90, `accuracy ${r.accuracy} after training to memorise (answers ${r.predictions.map((p) => p.pred).join('')}, truth ${r.predictions.map((p) => p.answer).join('')})`);
  assert.equal(cached.average.questionMean, r.accuracy);

  // The same questions without the cache: identical answers (and they are not one letter repeated).
  const full = await runEval(plan, { ...run, scoring: 'full' });
  assert.deepEqual(full.subjects[0].predictions.map((p) => p.pred), r.predictions.map((p) => p.pred));
  assert.ok(new Set(r.predictions.map((p) => p.pred)).size >= 3);

  // Batched (--batch-size 5: padded batches of whole prompts, the last one partial): identical answers.
  const batched = await runEval({ ...plan, batchSize: 5 }, run);
  assert.deepEqual(batched.subjects[0].predictions.map((p) => p.pred), r.predictions.map((p) => p.pred));
  for (let i = 0; i < r.predictions.length; i++)
    for (let k = 0; k < 4; k++) assert.ok(Math.abs(batched.subjects[0].predictions[i].logits[k] - r.predictions[i].logits[k]) < 1e-3, `q${i} letter ${k}`);

  // The CLI on the saved adapter: same score, table printed, JSON and Markdown written.
  const out = join(root, 'report.json');
  const cli = runCli(['eval', '--ceval', CEVAL, '--model', modelDir, '--adapter', outDir, '--subjects', SUBJECT, '--shots', '0', '--template', 'qwen', '--out', out]);
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(`^${SUBJECT}\\s+Humanities\\s+23\\s+${r.accuracy!.toFixed(2)}\\s+0$`, 'm'));
  const written = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(written.subjects[0].accuracy, r.accuracy);
  assert.match(readFileSync(join(root, 'report.md'), 'utf8'), /\| chinese_language_and_literature \| Chinese Language and Literature \(中国语言文学\) \| Humanities \| 23 \|/);
});

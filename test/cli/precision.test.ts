// The inference precision flags (src/cli/precision-option.ts) on score, the command that prints what
// the engine computes. --load-in-4bit: the scores equal those of a model folder holding the engine's
// NF4-dequantized weights in fp32 (written here through the same quantizer), and differ from the
// full-precision model's. --dtype bf16: within bf16's rounding of the fp32 scores, not equal to them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadBase } from '../../src/model/load.js';
import { writeHfModel } from '../../src/model/save.js';
import { runCli } from '../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'sft-precision-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 300, seed: 5, maxPosition: 64, force: true });
const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 300).join(',');

function logprobs(args: string[]): number[] {
  const r = runCli(['score', '--device', 'cpu', '--ids', ids, '--json', ...args]);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { logprobs: (number | null)[] }).logprobs.slice(1) as number[];
}
const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

test('score --load-in-4bit equals fp32 scoring of the dequantized NF4 base', async () => {
  const { model } = await loadBase(modelDir);
  model.quantize({ bits: 4, doubleQuant: true });
  const deqDir = join(root, 'dequantized');
  writeHfModel(deqDir, model, { sourceDir: modelDir, dtype: 'F32' });
  const full = logprobs(['--model', modelDir]);
  const nf4 = logprobs(['--model', modelDir, '--load-in-4bit']);
  const ref = logprobs(['--model', deqDir]);
  assert.ok(maxDiff(nf4, ref) < 1e-4, `4-bit scores off the dequantized reference by ${maxDiff(nf4, ref)}`);
  assert.ok(maxDiff(nf4, full) > 1e-3, 'the base was not quantized');
});

test('score --dtype bf16 is within bf16 rounding of fp32, and is not fp32', () => {
  const f32 = logprobs(['--model', modelDir]);
  const b16 = logprobs(['--model', modelDir, '--dtype', 'bf16']);
  const d = maxDiff(f32, b16);
  assert.ok(d < 5e-2, `bf16 log-probabilities off fp32 by ${d}`);
  assert.ok(d > 1e-6, 'bf16 scored exactly as fp32: the flag did not reach the engine');
});

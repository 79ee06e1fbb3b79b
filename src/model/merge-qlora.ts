// Merging an adapter trained with QLoRA. During training the adapter learned on top of the NF4
// base: every frozen linear weight W was dequant(NF4(W)), not W. Merging into the full-precision
// base (W + scale * B A, what `sft merge` and Firefly's merge script do by default) therefore gives
// a model that differs from what was trained by the quantization error of W; merging into the
// dequantized base (dequant(NF4(W)) + scale * B A for the quantized linears, every other tensor as
// it is) gives exactly the model training saw. peft computes the same sum when it merges on a 4-bit
// model, and then stores it back in 4 bits (a second rounding); here it is written unquantized.
//
// To show what the choice costs, both models are scored on a few samples: the mean cross-entropy
// over their trained tokens (as eval_loss), NF4 base + adapter against the merged weights.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NativeModel } from '../native/types.js';
import { applyLoraAdapter, loadBase, templateFor, RUN_CONFIG_FILE } from './load.js';
import { loraModulesOf } from './modules.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { prepareDataset } from '../data/dataset.js';
import { resolveTemplate } from '../data/chat-template.js';
import { evalLoss } from '../train/evaluation.js';
import { SftError } from '../errors.js';

/** What the adapter's sft_config.json says of its training, when it trained on an NF4 base. */
export interface QloraRun { trainMode: string; maxSeqLength: number; trainFile: string }

export function qloraRun(adapterDir: string): QloraRun | undefined {
  const f = join(adapterDir, RUN_CONFIG_FILE);
  if (!existsSync(f)) return undefined;  // an adapter from another tool: nothing says how it trained
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new SftError(`${f}: not valid JSON (${(err as Error).message}); the adapter's training config cannot be read`);
  }
  if (c.bits !== 4) return undefined;
  return {
    trainMode: String(c.train_mode),
    maxSeqLength: typeof c.max_seq_length === 'number' ? c.max_seq_length : 512, trainFile: String(c.train_file ?? ''),
  };
}

/** The base as the adapter saw it in training: NF4 with double quantization (on the CPU, where
 *  the engine keeps NF4 weights), with the adapter on top. */
export async function nf4BaseWithAdapter(modelDir: string, adapterDir: string): Promise<{ model: NativeModel; vocabSize: number; quantized: string[]; template: string }> {
  const { model, native } = await loadBase(modelDir, { device: 'cpu', bits: 4 });
  applyLoraAdapter(model, adapterDir);
  // quantize() takes every linear weight but lm_head: the modules LoRA's "all" names.
  const modules = new Set(loraModulesOf(native.arch));
  const quantized = model.baseParams().map((p) => p.name).filter((n) => n.endsWith('.weight') && modules.has(n.split('.').at(-2)!));
  const tok = await loadTokenizer(modelDir);
  return { model, vocabSize: native.vocabSize, quantized, template: templateFor(native.arch, adapterDir, tok) };
}

/** Replaces each quantized linear weight of `full` by its dequantized NF4 value from `nf4`. */
export function useDequantizedBase(full: NativeModel, nf4: NativeModel, quantized: string[]): void {
  for (const name of quantized) full.setTensor(name, nf4.getTensor(name));
}

export interface MergeScore { samples: number; tokens: number; nf4: number; merged: number }

/**
 * Mean loss over the trained tokens of the first `n` samples of `file`, encoded as in training
 * (the adapter's template and max_seq_length), for the NF4 base + adapter and the merged model.
 */
export async function scoreMerge(opts: {
  modelDir: string; file: string; n: number; template: string; maxSeqLength: number; nf4: NativeModel; merged: NativeModel; vocabSize: number;
}): Promise<MergeScore> {
  const tok = await loadTokenizer(opts.modelDir);
  const cacheDir = mkdtempSync(join(tmpdir(), 'sft-merge-score-'));
  try {
    const data = await prepareDataset({
      file: opts.file, tok, template: resolveTemplate(opts.template, tok), maxSeqLength: opts.maxSeqLength, vocabSize: opts.vocabSize, cacheDir,
    });
    try {
      const first = { size: Math.min(opts.n, data.size), get: (i: number) => data.get(i) };
      const score = async (m: NativeModel) => (await evalLoss(m, first, { batchSize: 1, maxRows: 1, padId: 0 }))!;
      const a = await score(opts.nf4), b = await score(opts.merged);
      return { samples: first.size, tokens: a.tokens, nf4: a.loss, merged: b.loss };
    } finally {
      data.remove();
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

/** "loss 1.2345 (perplexity 3.44)" */
export function lossText(loss: number): string {
  return `loss ${loss.toFixed(4)} (perplexity ${Math.exp(loss).toFixed(3)})`;
}

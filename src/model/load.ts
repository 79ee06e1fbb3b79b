// Loads a model folder (+ optional LoRA adapter) into the native engine, with its tokenizer:
// config.json -> engine config, safetensors -> weights (the engine reads the bytes itself),
// tokenizer.json -> Tok, adapter_config.json + adapter_model.safetensors -> LoRA tensors.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Arch, Device, NativeModel, NativeModelConfig, TensorSource } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { native } from '../native/binding.js';
import { readHfConfig } from './hfconfig.js';
import { listCheckpointTensors } from './weights.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { readLoraAdapter, adapterType, readPromptTuningAdapter } from '../io/peft.js';
import { SftError } from '../errors.js';
import { Stopped, stopRequested } from '../util/interrupt.js';
import { CHAT_TEMPLATE, type ChatTemplate } from '../data/templates.js';
import { resolveTemplate } from '../data/chat-template.js';

export interface LoadedModel {
  model: NativeModel;
  tok: Tok;
  native: NativeModelConfig;
  hf: Record<string, unknown>;
  /** The template that fits this model: the adapter's training template (its saved config), else the
   *  model's own chat_template, else the arch's Firefly template. */
  template: ChatTemplate;
  /** template.name ("chat_template" for the model's own; a folder `sft merge` wrote names its built-in). */
  templateName: string;
  modelDir: string;
  adapterDir?: string;
}

export interface LoadOptions {
  modelDir: string;
  adapterDir?: string;
  dtype?: 'f32' | 'f64' | 'bf16';
  device?: Device;
  threads?: number;
  /** 4: quantize the base to NF4 before applying the adapter. Default: what the adapter was trained
   *  on (bits in its sft_config.json), so a QLoRA adapter sees the same base as in training. */
  bits?: 4 | 16 | 32;
}

/** The name of the file sft writes beside an adapter with the run's resolved training config. */
export const RUN_CONFIG_FILE = 'sft_config.json';

const DEFAULT_TEMPLATE: Record<Arch, string> = { llama: 'llama2', baichuan: 'baichuan', baichuan2: 'baichuan2', qwen2: 'qwen', bloom: 'default' };

/** Build the engine for a model folder and read its weights (no adapter). bits 4: the linear
 *  weights are NF4 (double quantization) from the start: each quantizes as its tensor loads, so the
 *  base never exists whole in full precision (`quantized` says the sizes). */
export async function loadBase(modelDir: string, opts: { dtype?: 'f32' | 'f64' | 'bf16'; device?: Device; threads?: number; shouldStop?: () => boolean; bits?: 4 | 16 | 32 } = {}): Promise<{
  model: NativeModel;
  native: NativeModelConfig;
  hf: Record<string, unknown>;
  quantized?: { bytesBefore: number; bytesAfter: number };
}> {
  if (!existsSync(modelDir)) throw new SftError(`model folder ${modelDir} does not exist`);
  const { hf, native: cfg } = readHfConfig(modelDir);
  const config: NativeModelConfig = { ...cfg, dtype: opts.dtype ?? 'f32', device: opts.device ?? 'cpu', threads: opts.threads };
  const all = listCheckpointTensors(modelDir);
  // Before the engine exists: a config.json that does not describe these weights (100,000 layers,
  // a vocabulary of 1e9) is refused here, not after building a model of that size.
  checkConfigAgainstCheckpoint(modelDir, config, all);
  // Checkpoints spell some names several ways (Bloom with or without "transformer."), and carry
  // tensors the engine has no use for (lm_head of a tied model, rotary inv_freq): the engine says.
  const used = all.flatMap((s) => {
    const name = native().tensorName(config.arch, config.tieWordEmbeddings, s.name);
    return name === null ? [] : [{ ...s, name }];
  });
  const model = new (native().Model)(config);
  const expected = new Map(model.baseParams().map((p) => [p.name, p.shape]));
  for (const s of used) {
    const want = expected.get(s.name);
    if (!want) throw new SftError(`${s.file}: unexpected tensor "${s.name}" for a ${config.arch} model — is config.json from the same checkpoint?`);
    if (want.join(',') !== s.shape.join(',')) {
      throw new SftError(`${s.file}: tensor "${s.name}" has shape [${s.shape.join(', ')}], config.json implies [${want.join(', ')}] — config.json and the weights do not match`);
    }
  }
  const quantized = opts.bits === 4 ? model.quantize({ bits: 4, doubleQuant: true }) : undefined;
  const present = new Set(used.map((s) => s.name));
  const missing = [...expected.keys()].filter((n) => !present.has(n));
  if (missing.length) {
    throw new SftError(`${modelDir}: the checkpoint is missing ${missing.length} tensor(s): ${missing.slice(0, 6).join(', ')}${missing.length > 6 ? ', …' : ''}`);
  }
  // In parts of about 64M values (128-256 MiB): between two, a Ctrl-C recorded by the train command
  // stops the load (a 7B model takes a minute or more to read from a cold disk).
  const shouldStop = opts.shouldStop ?? (() => stopRequested() !== undefined);
  const parts = partsOf(used, 64 * 2 ** 20);
  for (let i = 0; i < parts.length; i++) {
    if (shouldStop()) throw new Stopped(`loading the weights of ${modelDir}`);
    try {
      await model.loadWeights(parts[i], { partial: i < parts.length - 1 });
    } catch (err) {
      throw new SftError(`${modelDir}: ${(err as Error).message}`);
    }
  }
  return { model, native: config, hf, quantized };
}

/** Consecutive runs of tensors of about `elements` values each (a larger tensor is a run alone). */
function partsOf(sources: TensorSource[], elements: number): TensorSource[][] {
  const parts: TensorSource[][] = [[]];
  let size = 0;
  for (const s of sources) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (size > 0 && size + n > elements) {
      parts.push([]);
      size = 0;
    }
    parts[parts.length - 1].push(s);
    size += n;
  }
  return parts;
}

/** The sizes config.json gives against what the checkpoint's headers hold: the layer count (the
 *  largest layer index in the tensor names, plus one) and the embedding's [vocab, hidden]. Cheap
 *  (names and shapes only), and it runs before anything of the config's size is built. */
export function checkConfigAgainstCheckpoint(modelDir: string, c: NativeModelConfig, tensors: TensorSource[]): void {
  const cfgFile = join(modelDir, 'config.json');
  const files = [...new Set(tensors.map((t) => t.file))];
  const where = files.length === 1 ? files[0] : `the ${files.length} checkpoint files in ${modelDir}`;
  let layers = 0;
  for (const t of tensors) {
    const m = /(?:^|\.)(?:layers|h)\.(\d+)\./.exec(t.name);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  const layersKey = c.arch === 'bloom' ? 'n_layer' : 'num_hidden_layers';
  if (layers !== c.numLayers) {
    throw new SftError(`${cfgFile} says ${layersKey} ${c.numLayers} but ${where} holds ${layers} layers — config.json and the weights do not match`);
  }
  const emb = tensors.find((t) => /(?:^|\.)(?:embed_tokens|word_embeddings)\.weight$/.test(t.name));
  if (emb && (emb.shape[0] !== c.vocabSize || emb.shape[1] !== c.hiddenSize)) {
    throw new SftError(`${cfgFile} says vocab_size ${c.vocabSize} and hidden_size ${c.hiddenSize}, but ${emb.file} holds "${emb.name}" of shape [${emb.shape.join(', ')}] — config.json and the weights do not match`);
  }
}

/** Attach a saved PEFT adapter: LoRA, or prompt tuning's virtual-token embeddings. */
export function applyAdapter(model: NativeModel, adapterDir: string): void {
  if (adapterType(adapterDir) === 'PROMPT_TUNING') {
    const { config, embeddings } = readPromptTuningAdapter(adapterDir);
    try {
      model.addPromptTuning({ numVirtualTokens: config.numVirtualTokens, init: embeddings, seed: 0 });
    } catch (err) {
      throw new SftError(`${adapterDir}: ${(err as Error).message} — was it trained on another base model?`);
    }
    return;
  }
  applyLoraAdapter(model, adapterDir);
}

/** Attach a saved PEFT LoRA adapter (its tensors replace the fresh init). */
export function applyLoraAdapter(model: NativeModel, adapterDir: string): void {
  const { config, tensors } = readLoraAdapter(adapterDir);
  const added = model.addLora({
    targets: config.targetModules,
    rank: config.r,
    alpha: config.loraAlpha,
    dropout: 0,
    seed: 0,
    useRslora: config.useRslora,
  });
  const want = new Map(added.map((p) => [p.name, p.shape]));
  for (const t of tensors) {
    const shape = want.get(t.name);
    if (!shape) throw new SftError(`${adapterDir}: adapter tensor "${t.name}" does not match any LoRA module of this model — was it trained on another base model?`);
    if (shape.join(',') !== t.shape.join(',')) {
      throw new SftError(`${adapterDir}: adapter tensor "${t.name}" has shape [${t.shape.join(', ')}], this model needs [${shape.join(', ')}] — different base model or rank`);
    }
    model.setTensor(t.name, t.data);
    want.delete(t.name);
  }
  if (want.size) throw new SftError(`${adapterDir}: adapter is missing ${want.size} tensor(s), e.g. ${[...want.keys()][0]}`);
}

/** The training config saved beside an adapter by sft (absent for adapters from other tools). */
function savedRunConfig(adapterDir?: string): { template_name?: unknown; bits?: unknown } {
  if (!adapterDir) return {};
  const f = join(adapterDir, RUN_CONFIG_FILE);
  if (!existsSync(f)) return {};
  try {
    return JSON.parse(readFileSync(f, 'utf8')) as { template_name?: unknown; bits?: unknown };
  } catch {
    return {};
  }
}

/** The template name an sft adapter was trained with (its sft_config.json), if it says. */
export function trainingTemplateName(adapterDir: string): string | undefined {
  const saved = savedRunConfig(adapterDir);
  return typeof saved.template_name === 'string' && saved.template_name ? saved.template_name : undefined;
}

export function templateFor(arch: Arch, adapterDir: string | undefined, tok: Tok): string {
  const saved = savedRunConfig(adapterDir);
  if (typeof saved.template_name === 'string' && saved.template_name) return saved.template_name;
  return tok.chatTemplate !== undefined ? CHAT_TEMPLATE : DEFAULT_TEMPLATE[arch];
}

export async function loadModel(opts: LoadOptions): Promise<LoadedModel> {
  const bits = opts.bits ?? (savedRunConfig(opts.adapterDir).bits === 4 ? 4 : undefined);
  const { model, native: cfg, hf } = await loadBase(opts.modelDir, { ...opts, bits });
  if (opts.adapterDir) applyAdapter(model, opts.adapterDir);
  // An adapter folder carries the tokenizer it was trained with; prefer it when present.
  const tokDir = opts.adapterDir && existsSync(join(opts.adapterDir, 'tokenizer.json')) ? opts.adapterDir : opts.modelDir;
  const tok = await loadTokenizer(tokDir);
  const template = resolveTemplate(templateFor(cfg.arch, opts.adapterDir, tok), tok);
  // Last: nothing below reads the base weights by their rows (inference only; the engine unpacks
  // them itself if anything does).
  await model.prepareInference();
  return {
    model,
    tok,
    native: cfg,
    hf,
    template,
    templateName: template.name,
    modelDir: opts.modelDir,
    adapterDir: opts.adapterDir,
  };
}

// LoRA and prompt-tuning adapters in PEFT's on-disk layout (SPEC.md §2): adapter_config.json + adapter_model.safetensors
// whose keys are "base_model.model." + the module path, e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight [r, in] / ...lora_B.weight [out, r].
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from './safetensors.js';
import { writeFileNamed } from './atomic.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const PREFIX = 'base_model.model.';

export interface LoraAdapterConfig {
  baseModel: string;
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string[];
  useRslora?: boolean;
}

export interface AdapterTensor {
  /** Without the "base_model.model." prefix, e.g. "model.layers.0.self_attn.q_proj.lora_A.weight". */
  name: string;
  shape: number[];
  data: Float32Array;
}

export function writeLoraAdapter(dir: string, adapter: { tensors: AdapterTensor[]; config: LoraAdapterConfig }): void {
  const c = adapter.config;
  // LoraConfig fields PEFT has known since 0.9 (use_dora); older PEFT versions refuse unknown keys,
  // newer ones fill in defaults for any key left out.
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: c.baseModel,
    revision: null,
    r: c.r,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    // Always written: PEFT has no default target list for Baichuan's W_pack.
    target_modules: c.targetModules,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: c.useRslora ?? false,
    use_dora: false,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    inference_mode: true,
  };
  fs.mkdirSync(dir, { recursive: true });
  writeFileNamed(path.join(dir, ADAPTER_CONFIG), JSON.stringify(config, null, 2) + '\n');
  writeSafetensors(
    path.join(dir, ADAPTER_WEIGHTS),
    adapter.tensors.map((t) => ({ name: PREFIX + t.name, dtype: 'F32' as const, shape: t.shape, data: t.data })),
    { format: 'pt' },
  );
}

export function readLoraAdapter(dir: string): { config: LoraAdapterConfig; tensors: AdapterTensor[] } {
  const configFile = path.join(dir, ADAPTER_CONFIG);
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS);
  const missing = [configFile, weightsFile].filter((f) => !fs.existsSync(f));
  if (missing.length) {
    const bin = fs.existsSync(path.join(dir, 'adapter_model.bin')) ? ' (adapter_model.bin is not read; save the adapter with safe_serialization=True)' : '';
    throw new SftError(`LoRA adapter folder ${dir} lacks ${missing.map((f) => path.basename(f)).join(' and ')}${bin}.`);
  }
  const config = parseConfig(configFile);
  const header = readSafetensorsHeader(weightsFile);
  const tensors: AdapterTensor[] = [];
  for (const [key, info] of header.tensors) {
    if (!key.startsWith(PREFIX)) throw new SftError(`${weightsFile}: tensor "${key}" does not start with "${PREFIX}"; not a PEFT adapter file.`);
    tensors.push({ name: key.slice(PREFIX.length), shape: info.shape, data: readTensorF32(weightsFile, header, key) });
  }
  return { config, tensors };
}

function parseConfig(file: string): LoraAdapterConfig {
  const raw = readJsonObject(file);
  if (raw.peft_type !== 'LORA') {
    throw new SftError(`${file}: peft_type is ${JSON.stringify(raw?.peft_type)}; only LORA adapters are read here.`);
  }
  const num = (key: string, ok: (v: number) => boolean): number => {
    const v = raw[key];
    if (typeof v !== 'number' || !ok(v)) throw new SftError(`${file}: "${key}" is ${JSON.stringify(v)}; expected a valid number.`);
    return v;
  };
  // PEFT also allows a single regex string; the engine needs explicit module names.
  const targets = raw.target_modules;
  if (!Array.isArray(targets) || !targets.every((t) => typeof t === 'string')) {
    throw new SftError(`${file}: "target_modules" is ${JSON.stringify(targets)}; expected a list of module names such as ["q_proj", "v_proj"].`);
  }
  const useRslora = raw.use_rslora ?? false;
  if (typeof useRslora !== 'boolean') throw new SftError(`${file}: "use_rslora" must be true or false.`);
  // Variants whose tensors the engine would apply wrongly or not at all.
  const isEmpty = (v: unknown) => v === undefined || v === null || (typeof v === 'object' && Object.keys(v).length === 0);
  const unsupported: [boolean, string][] = [
    [raw.use_dora === true, 'use_dora true (DoRA)'],
    [raw.fan_in_fan_out === true, 'fan_in_fan_out true'],
    [raw.bias !== undefined && raw.bias !== 'none', `bias ${JSON.stringify(raw.bias)} (only "none")`],
    [!isEmpty(raw.rank_pattern) || !isEmpty(raw.alpha_pattern), 'per-module rank_pattern/alpha_pattern'],
    [!isEmpty(raw.modules_to_save), 'modules_to_save'],
  ];
  for (const [bad, what] of unsupported) if (bad) throw new SftError(`${file}: ${what} is not supported.`);
  return {
    baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : '',
    r: num('r', (v) => Number.isSafeInteger(v) && v > 0),
    loraAlpha: num('lora_alpha', (v) => v > 0),
    loraDropout: num('lora_dropout', (v) => v >= 0 && v < 1),
    targetModules: targets as string[],
    useRslora,
  };
}

// ---- prompt tuning (PEFT PROMPT_TUNING) -----------------------------------------------------
// adapter_config.json with peft_type PROMPT_TUNING + adapter_model.safetensors holding one tensor,
// "prompt_embeddings" [num_virtual_tokens, token_dim] (PEFT saves it without the base_model prefix).

export type PromptTuningInit = 'RANDOM' | 'TEXT' | 'SAMPLE_VOCAB';

export interface PromptTuningAdapterConfig {
  baseModel: string;
  numVirtualTokens: number;
  tokenDim: number;
  numAttentionHeads: number;
  numLayers: number;
  init: PromptTuningInit;
  initText?: string;
}

export const PROMPT_EMBEDDINGS = 'prompt_embeddings';

export function writePromptTuningAdapter(dir: string, adapter: { embeddings: Float32Array; config: PromptTuningAdapterConfig }): void {
  const c = adapter.config;
  const config = {
    peft_type: 'PROMPT_TUNING',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: c.baseModel,
    revision: null,
    inference_mode: true,
    num_virtual_tokens: c.numVirtualTokens,
    token_dim: c.tokenDim,
    num_transformer_submodules: 1,
    num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers,
    prompt_tuning_init: c.init,
    prompt_tuning_init_text: c.init === 'TEXT' ? (c.initText ?? '') : null,
    // PEFT requires a tokenizer for TEXT init; with inference_mode it is not loaded.
    tokenizer_name_or_path: c.init === 'TEXT' ? c.baseModel : null,
    tokenizer_kwargs: null,
  };
  if (adapter.embeddings.length !== c.numVirtualTokens * c.tokenDim) {
    throw new SftError(`prompt embeddings hold ${adapter.embeddings.length} values, expected ${c.numVirtualTokens} x ${c.tokenDim}`);
  }
  fs.mkdirSync(dir, { recursive: true });
  writeFileNamed(path.join(dir, ADAPTER_CONFIG), JSON.stringify(config, null, 2) + '\n');
  writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), [{ name: PROMPT_EMBEDDINGS, dtype: 'F32', shape: [c.numVirtualTokens, c.tokenDim], data: adapter.embeddings }], { format: 'pt' });
}

/** The peft_type of an adapter folder ("LORA", "PROMPT_TUNING", ...). */
export function adapterType(dir: string): string {
  const file = path.join(dir, ADAPTER_CONFIG);
  if (!fs.existsSync(file)) throw new SftError(`adapter folder ${dir} has no ${ADAPTER_CONFIG}`);
  return String(readJsonObject(file).peft_type);
}

/** An adapter_config.json as an object; anything else is an error naming the file. */
function readJsonObject(file: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SftError(`${file}: not valid JSON (${(err as Error).message}).`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new SftError(`${file}: expected a JSON object.`);
  return raw as Record<string, unknown>;
}

export function readPromptTuningAdapter(dir: string): { config: PromptTuningAdapterConfig; embeddings: Float32Array } {
  const configFile = path.join(dir, ADAPTER_CONFIG);
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS);
  for (const f of [configFile, weightsFile]) if (!fs.existsSync(f)) throw new SftError(`prompt-tuning adapter folder ${dir} lacks ${path.basename(f)}.`);
  const raw = readJsonObject(configFile);
  if (raw.peft_type !== 'PROMPT_TUNING') throw new SftError(`${configFile}: peft_type is ${JSON.stringify(raw.peft_type)}, expected "PROMPT_TUNING".`);
  const n = raw.num_virtual_tokens, d = raw.token_dim;
  if (!Number.isSafeInteger(n) || (n as number) <= 0) throw new SftError(`${configFile}: "num_virtual_tokens" is ${JSON.stringify(n)}; expected a positive integer.`);
  if ((raw.num_transformer_submodules ?? 1) !== 1) throw new SftError(`${configFile}: num_transformer_submodules ${JSON.stringify(raw.num_transformer_submodules)} (encoder-decoder prompts) is not supported.`);
  const header = readSafetensorsHeader(weightsFile);
  const info = header.tensors.get(PROMPT_EMBEDDINGS);
  if (!info) throw new SftError(`${weightsFile}: no "${PROMPT_EMBEDDINGS}" tensor; not a prompt-tuning adapter.`);
  if (info.shape.length !== 2 || info.shape[0] !== n || (d !== undefined && info.shape[1] !== d)) {
    throw new SftError(`${weightsFile}: "${PROMPT_EMBEDDINGS}" has shape [${info.shape.join(', ')}], adapter_config.json says [${String(n)}, ${String(d)}].`);
  }
  return {
    config: {
      baseModel: typeof raw.base_model_name_or_path === 'string' ? raw.base_model_name_or_path : '',
      numVirtualTokens: n as number,
      tokenDim: info.shape[1],
      numAttentionHeads: Number(raw.num_attention_heads ?? 0),
      numLayers: Number(raw.num_layers ?? 0),
      init: (raw.prompt_tuning_init as PromptTuningInit) ?? 'RANDOM',
      initText: typeof raw.prompt_tuning_init_text === 'string' ? raw.prompt_tuning_init_text : undefined,
    },
    embeddings: readTensorF32(weightsFile, header, PROMPT_EMBEDDINGS),
  };
}

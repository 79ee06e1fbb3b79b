// LoRA adapters in PEFT's on-disk layout (SPEC.md §2): adapter_config.json + adapter_model.safetensors
// whose keys are "base_model.model." + the module path, e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight [r, in] / ...lora_B.weight [out, r].
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from './safetensors.js';

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
  fs.writeFileSync(path.join(dir, ADAPTER_CONFIG), JSON.stringify(config, null, 2) + '\n');
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
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SftError(`${file}: not valid JSON (${(err as Error).message}).`);
  }
  if (raw?.peft_type !== 'LORA') {
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

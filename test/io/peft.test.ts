// PEFT LoRA adapter files: key names, config keys, and a write/read round trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readLoraAdapter, writeLoraAdapter } from '../../src/io/peft.js';
import { readSafetensorsHeader } from '../../src/io/safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-peft-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const A = new Float32Array([0.5, -1, 2, 0.25, 3, -4]); // [2, 3]
const B = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]); // [4, 2]
const tensors = [
  { name: 'model.layers.0.self_attn.q_proj.lora_A.weight', shape: [2, 3], data: A },
  { name: 'model.layers.0.self_attn.q_proj.lora_B.weight', shape: [4, 2], data: B },
  { name: 'model.layers.0.self_attn.W_pack.lora_B.weight', shape: [9, 2], data: new Float32Array(18).fill(0.125) },
];
const config = { baseModel: 'data/models/tiny', r: 2, loraAlpha: 16, loraDropout: 0.05, targetModules: ['q_proj', 'W_pack'] };

test('writes PEFT key names, F32, format metadata and LoraConfig keys', () => {
  const dir = path.join(tmp, 'a');
  writeLoraAdapter(dir, { tensors, config });
  const h = readSafetensorsHeader(path.join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(h.metadata, { format: 'pt' });
  assert.deepEqual([...h.tensors.keys()], [
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
    'base_model.model.model.layers.0.self_attn.W_pack.lora_B.weight',
  ]);
  assert.ok([...h.tensors.values()].every((t) => t.dtype === 'F32'));
  const written = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(written, {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'data/models/tiny', revision: null,
    r: 2, lora_alpha: 16, lora_dropout: 0.05, target_modules: ['q_proj', 'W_pack'], bias: 'none',
    fan_in_fan_out: false, use_rslora: false, use_dora: false, init_lora_weights: true, modules_to_save: null,
    layers_to_transform: null, layers_pattern: null, rank_pattern: {}, alpha_pattern: {}, inference_mode: true,
  });
});

test('round trip', () => {
  const dir = path.join(tmp, 'b');
  writeLoraAdapter(dir, { tensors, config: { ...config, useRslora: true } });
  const back = readLoraAdapter(dir);
  assert.deepEqual(back.config, { ...config, useRslora: true });
  assert.deepEqual(back.tensors.map((t) => t.name), tensors.map((t) => t.name));
  assert.deepEqual(back.tensors.map((t) => t.shape), [[2, 3], [4, 2], [9, 2]]);
  assert.deepEqual([...back.tensors[0].data], [0.5, -1, 2, 0.25, 3, -4]);
  assert.deepEqual([...back.tensors[1].data], [1, 2, 3, 4, 5, 6, 7, 8]);
});

test('clear errors for missing files and other adapter kinds', () => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty);
  assert.throws(() => readLoraAdapter(empty), /lacks adapter_config\.json and adapter_model\.safetensors/);

  const dir = path.join(tmp, 'c');
  writeLoraAdapter(dir, { tensors, config });
  const cfgFile = path.join(dir, 'adapter_config.json');
  const edit = (patch: Record<string, unknown>) => fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), ...patch }));
  edit({ peft_type: 'PROMPT_TUNING' });
  assert.throws(() => readLoraAdapter(dir), /peft_type is "PROMPT_TUNING"; only LORA/);
  edit({ peft_type: 'LORA', target_modules: '.*proj' });
  assert.throws(() => readLoraAdapter(dir), /"target_modules" is ".\*proj"/);
  edit({ target_modules: ['q_proj'], use_dora: true });
  assert.throws(() => readLoraAdapter(dir), /use_dora true \(DoRA\) is not supported/);
  edit({ use_dora: false, rank_pattern: { q_proj: 4 } });
  assert.throws(() => readLoraAdapter(dir), /rank_pattern/);
  edit({ rank_pattern: {}, r: 0 });
  assert.throws(() => readLoraAdapter(dir), /"r" is 0/);
  fs.rmSync(path.join(dir, 'adapter_model.safetensors'));
  assert.throws(() => readLoraAdapter(dir), /lacks adapter_model\.safetensors\./);
});

// `sft export --format gguf`: a model folder (with a LoRA adapter merged in, optionally) as one GGUF
// file that llama.cpp runs: llama.cpp's tensor names and layouts (gguf-arch.ts), each tensor in the
// encoding the file type picks (gguf-types.ts, quantized by the addon on a worker thread), the
// hyperparameters, the tokenizer and chat template (gguf-vocab.ts), in one atomic write (gguf-file.ts).
import { basename, resolve } from 'node:path';
import type { Device, NativeModel, NativeModelConfig } from '../native/types.js';
import { native } from '../native/binding.js';
import { readHfConfig, trainedContext } from '../model/hfconfig.js';
import { loadBase } from '../model/load.js';
import { SftError } from '../errors.js';
import { writeGguf, type GgufTensor, type GgufValue } from './gguf-file.js';
import { ggufArchMetadata, ggufArchName, ggufTensors } from './gguf-arch.js';
import { FILE_TYPES, LLAMA_FILE_TYPE, tensorTypes, type GgufFileType } from './gguf-types.js';
import { vocabMetadata } from './gguf-vocab.js';

export interface GgufExportOptions {
  modelDir: string;
  adapterDir?: string;
  out: string;
  type: string;
  device: Device;
  dequantizedBase?: boolean;
  say: (line: string) => void;
  /** Called as each tensor is written (a 7B model's q4_k_m takes minutes on a few cores). */
  progress?: (done: number, total: number, name: string) => void;
}

export interface GgufExportResult {
  bytes: number;
  /** Where the tensor data begins (the header's length). */
  dataOffset: number;
  tensors: { name: string; type: string; dims: number[] }[];
}

export function parseFileType(type: string): GgufFileType {
  const t = type.toLowerCase();
  if (!(FILE_TYPES as readonly string[]).includes(t)) throw new SftError(`--type ${type}: not a GGUF file type sft writes; choose one of ${FILE_TYPES.join(', ')}`);
  return t as GgufFileType;
}

export async function exportGguf(opts: GgufExportOptions): Promise<GgufExportResult> {
  const fileType = parseFileType(opts.type);
  // Everything that can be refused from the folder's small files is, before the weights load.
  const { hf, native: cfg } = readHfConfig(opts.modelDir);
  let chatTemplate: string | undefined;
  let notice: string | undefined;
  if (opts.adapterDir) {
    const { adapterChatTemplate } = await import('../model/merged.js');
    ({ template: chatTemplate, notice } = adapterChatTemplate(opts.adapterDir));
  }
  const vocab = await vocabMetadata(opts.modelDir, cfg.vocabSize, chatTemplate);

  let model: NativeModel;
  let config: NativeModelConfig = cfg;
  if (opts.adapterDir) {
    const { loadMergedModel } = await import('../model/merged.js');
    ({ model, native: config } = await loadMergedModel(opts.modelDir, opts.adapterDir, { device: opts.device, dequantizedBase: opts.dequantizedBase ?? false, loadNf4: false, say: opts.say }));
  } else {
    ({ model, native: config } = await loadBase(opts.modelDir, { device: opts.device }));
  }

  const sources = ggufTensors(config, (name) => model.getTensor(name));
  const tied = !sources.some((t) => t.name === 'output.weight');
  const types = tensorTypes(fileType, sources, config.numLayers, tied);
  const addon = native().gguf;
  const tensors: GgufTensor[] = sources.map((s, i) => {
    const cols = s.shape[s.shape.length - 1];
    const rows = s.shape.length === 1 ? 1 : s.shape[0];
    return {
      name: s.name,
      dims: [...s.shape].reverse(),
      type: types[i],
      byteLength: rows * addon.rowBytes(types[i], cols),
      bytes: () => addon.quantize(types[i], s.data(), rows, cols),
    };
  });

  const name = basename(resolve(opts.modelDir)) + (opts.adapterDir ? `+${basename(resolve(opts.adapterDir))}` : '');
  const metadata: [string, GgufValue][] = [
    ['general.architecture', { type: 'string', value: ggufArchName(config) }],
    ['general.name', { type: 'string', value: name }],
    ['general.file_type', { type: 'u32', value: LLAMA_FILE_TYPE[fileType] }],
    ...(fileType === 'q8_0' || fileType === 'q4_k_m' ? [['general.quantization_version', { type: 'u32', value: 2 }] as [string, GgufValue]] : []),
    ...ggufArchMetadata(config, trainedContext(hf)?.length ?? 2048),
    ...vocab.kv,
  ];
  for (const n of vocab.notes) opts.say(`  ${n}`);
  if ((config.arch === 'baichuan' || config.arch === 'baichuan2') && config.numLayers !== 32) {
    // llama.cpp tells Baichuan-7B (RoPE) from Baichuan-13B (ALiBi) by the layer count alone.
    opts.say(`  Note: llama.cpp applies RoPE to a baichuan model only when it has 32 layers (Baichuan-7B); this one has ${config.numLayers}, so llama.cpp will run it ${config.numLayers === 40 ? 'with ALiBi, as Baichuan-13B' : 'without position encoding'}, unlike sft and transformers.`);
  }
  if (notice) opts.say(`  ${notice}`);
  const { bytes, dataOffset } = await writeGguf(opts.out, metadata, tensors, (t, i) => opts.progress?.(i + 1, tensors.length, t.name));
  return { bytes, dataOffset, tensors: tensors.map((t) => ({ name: t.name, type: t.type, dims: t.dims })) };
}

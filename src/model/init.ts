// Makes a small random model folder in the real Hugging Face layout of one of the supported
// architectures: config.json, generation_config.json, model.safetensors (F32), and a byte-level BPE
// tokenizer (tokenizer.json + tokenizer_config.json with the arch's chat template). It gives demos and
// tests a model that every part of sft loads exactly as it would load a downloaded checkpoint.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SftError } from '../errors.js';
import type { Arch, NativeModelConfig } from '../native/types.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { trainByteLevelBpe, type TokenizerJson } from '../tokenizer/bpe-train.js';
import { expectedTensors, nativeConfigFromHf } from './hfconfig.js';
import { normalSampler } from '../util/random.js';

export interface InitModelOptions {
  arch: Arch;
  outDir: string;
  hidden: number;
  layers: number;
  heads: number;
  /** Defaults to `heads` for Baichuan and Bloom (their fused q/k/v have no grouped K/V) and to heads/2 otherwise. */
  kvHeads?: number;
  /** MLP width; bloom ignores it (its MLP is always 4 × hidden). */
  intermediate: number;
  /** Target tokenizer size; the tokenizer stops earlier when the texts run out of repeated pairs. */
  vocab: number;
  seed: number;
  maxPosition: number;
  force: boolean;
  /** Tokenizer training texts; default: data/demo.jsonl beside the sft package, else a built-in list. */
  texts?: string[];
}

export interface InitModelResult {
  dir: string;
  /** Tokens in the trained tokenizer (specials included). */
  tokenizerSize: number;
  /** vocab_size in config.json: tokenizerSize rounded up to a multiple of 64. */
  vocabSize: number;
  parameters: number;
  native: NativeModelConfig;
}

/** Every token any arch's chat template or the Firefly templates use, as special tokens, ids 0..10. */
export const SPECIAL_TOKENS = [
  '<unk>', '<s>', '</s>', '<pad>',
  '<reserved_102>', '<reserved_103>', '<reserved_106>', '<reserved_107>',
  '<|im_start|>', '<|im_end|>', '<|endoftext|>',
] as const;

interface ArchTokens { bos: string | null; eos: string; pad: string; unk: string | null }

const ARCH_TOKENS: Record<Arch, ArchTokens> = {
  llama: { bos: '<s>', eos: '</s>', pad: '<pad>', unk: '<unk>' },
  baichuan: { bos: '<s>', eos: '</s>', pad: '<pad>', unk: '<unk>' },
  baichuan2: { bos: '<s>', eos: '</s>', pad: '<pad>', unk: '<unk>' },
  // As Qwen2-Instruct: no BOS, <|im_end|> ends a turn, <|endoftext|> pads.
  qwen2: { bos: null, eos: '<|im_end|>', pad: '<|endoftext|>', unk: null },
  // As bigscience/bloom's tokenizer.
  bloom: { bos: '<s>', eos: '</s>', pad: '<pad>', unk: '<unk>' },
};

// Jinja chat templates in the style each model family ships (transformers renders them with
// bos_token/eos_token in scope). Written without raise_exception so any Jinja renderer can run them.
const CHAT_TEMPLATES: Record<Arch, string> = {
  // Qwen2-Instruct's template.
  qwen2:
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}" +
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  // Llama-2-chat: [INST] turns, the system prompt folded into the first user turn.
  llama:
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}" +
    "{% else %}{% set system_message = '' %}{% set loop_messages = messages %}{% endif %}" +
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}" +
    "{% if loop.first and system_message != '' %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
    "{% else %}{% set content = message['content'] %}{% endif %}" +
    "{{ bos_token + '[INST] ' + (content | trim) + ' [/INST]' }}" +
    "{% elif message['role'] == 'assistant' %}{{ ' ' + (message['content'] | trim) + ' ' + eos_token }}{% endif %}{% endfor %}",
  // Baichuan: user turns between reserved tokens, the answer ends with </s>; a system text goes first, plain.
  baichuan: baichuanTemplate('<reserved_102>', '<reserved_103>'),
  baichuan2: baichuanTemplate('<reserved_106>', '<reserved_107>'),
  // Bloom ships no chat template; this is Firefly's "default" format, the one Firefly trains Bloom with.
  bloom:
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ 'System: ' + message['content'] + '\\n\\n' }}" +
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\nAssistant: ' }}" +
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}",
};

function baichuanTemplate(user: string, assistant: string): string {
  return (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}" +
    `{% elif message['role'] == 'user' %}{{ '${user}' + message['content'] + '${assistant}' }}` +
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
  );
}

export function initModel(opts: InitModelOptions): InitModelResult {
  const dir = opts.outDir;
  prepareDir(dir, opts.force);
  const kvHeads = checkShape(opts);

  const tokJson = trainByteLevelBpe(opts.texts ?? defaultTexts(), { vocabSize: opts.vocab, specialTokens: [...SPECIAL_TOKENS] });
  const tokenizerSize = Object.keys(tokJson.model.vocab).length;
  const vocabSize = Math.ceil(tokenizerSize / 64) * 64;
  const idOf = (t: string | null) => (t === null ? null : tokJson.model.vocab[t]);
  const tokens = ARCH_TOKENS[opts.arch];

  const hf = hfConfig(opts, kvHeads, vocabSize, { bos: idOf(tokens.bos ?? '<|endoftext|>'), eos: idOf(tokens.eos)!, pad: idOf(tokens.pad)! });
  const native = nativeConfigFromHf(hf, path.join(dir, 'config.json'));
  const tensors = randomTensors(native, opts.seed);

  writeJson(path.join(dir, 'config.json'), hf);
  writeJson(path.join(dir, 'generation_config.json'), generationConfig(opts.arch, hf, idOf));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeJson(path.join(dir, 'tokenizer.json'), tokJson);
  writeJson(path.join(dir, 'tokenizer_config.json'), tokenizerConfig(opts.arch, tokJson, opts.maxPosition));
  return { dir, tokenizerSize, vocabSize, parameters: tensors.reduce((n, t) => n + t.data.length, 0), native };
}

/** Validates the shape options; returns the number of K/V heads. */
function checkShape(o: InitModelOptions): number {
  const positive = { hidden: o.hidden, layers: o.layers, heads: o.heads, intermediate: o.intermediate, vocab: o.vocab, 'max-position': o.maxPosition };
  for (const [k, v] of Object.entries(positive)) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new SftError(`--${k} must be a positive integer (got ${v}).`);
  }
  const fused = o.arch === 'baichuan' || o.arch === 'baichuan2' || o.arch === 'bloom';
  const kv = o.kvHeads ?? (fused ? o.heads : Math.max(1, Math.floor(o.heads / 2)));
  if (fused && kv !== o.heads) {
    const proj = o.arch === 'bloom' ? 'query_key_value' : 'W_pack';
    throw new SftError(`--kv-heads ${kv}: ${o.arch} has one fused ${proj} projection, so K/V heads must equal --heads (${o.heads}).`);
  }
  if (o.hidden % o.heads !== 0) throw new SftError(`--hidden ${o.hidden} must be a multiple of --heads ${o.heads}.`);
  if (o.arch !== 'bloom' && (o.hidden / o.heads) % 2 !== 0) throw new SftError(`--hidden / --heads = ${o.hidden / o.heads} must be even (RoPE rotates pairs).`);
  if (!Number.isSafeInteger(kv) || kv <= 0 || o.heads % kv !== 0) throw new SftError(`--heads ${o.heads} must be a multiple of --kv-heads ${kv}.`);
  if (o.vocab < 256 + SPECIAL_TOKENS.length) throw new SftError(`--vocab ${o.vocab} is too small: the byte-level tokenizer needs at least ${256 + SPECIAL_TOKENS.length} tokens.`);
  return kv;
}

function prepareDir(dir: string, force: boolean): void {
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new SftError(`--out ${dir} exists and is not a folder.`);
    const entries = fs.readdirSync(dir);
    if (entries.length && !force) throw new SftError(`--out ${dir} is not empty; pass --force to overwrite the model files in it.`);
    // Weight and tokenizer files of another layout would be read instead of (or beside) ours.
    const stale = /^(model.*\.safetensors|model\.safetensors\.index\.json|pytorch_model.*\.bin(\.index\.json)?|tokenizer\.model|special_tokens_map\.json|chat_template\.jinja)$/;
    for (const e of entries) if (stale.test(e)) fs.rmSync(path.join(dir, e));
  }
  fs.mkdirSync(dir, { recursive: true });
}

/** config.json with the keys the arch's published configs carry. */
function hfConfig(o: InitModelOptions, kvHeads: number, vocabSize: number, ids: { bos: number | null; eos: number; pad: number }): Record<string, unknown> {
  if (o.arch === 'bloom') {
    // As bigscience/bloom-560m: ALiBi (no max_position_embeddings), MLP 4 × hidden, tied head.
    // seq_length (the training length; transformers ignores it) tells chat/serve the context size.
    return {
      apply_residual_connection_post_layernorm: false, architectures: ['BloomForCausalLM'], attention_dropout: 0.0,
      bos_token_id: ids.bos, eos_token_id: ids.eos, hidden_dropout: 0.0, hidden_size: o.hidden, initializer_range: 0.02,
      layer_norm_epsilon: 1e-5, model_type: 'bloom', n_head: o.heads, n_layer: o.layers, pad_token_id: ids.pad,
      pretraining_tp: 1, seq_length: o.maxPosition, slow_but_exact: false, tie_word_embeddings: true, torch_dtype: 'float32', use_cache: true,
      vocab_size: vocabSize,
    };
  }
  const common = {
    vocab_size: vocabSize,
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    hidden_act: 'silu',
    max_position_embeddings: o.maxPosition,
    initializer_range: 0.02,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    torch_dtype: 'float32',
    use_cache: true,
  };
  switch (o.arch) {
    case 'llama':
      return {
        architectures: ['LlamaForCausalLM'], model_type: 'llama', ...common,
        num_key_value_heads: kvHeads, rms_norm_eps: 1e-5, rope_theta: 10000.0, rope_scaling: null,
        attention_bias: false, attention_dropout: 0.0, mlp_bias: false, pretraining_tp: 1, tie_word_embeddings: false,
      };
    case 'baichuan':
      // Baichuan-7B's config: RoPE base fixed at 10000 in its modeling code, no K/V head count.
      return { architectures: ['BaiChuanForCausalLM'], model_type: 'baichuan', ...common, rms_norm_eps: 1e-6, tie_word_embeddings: false };
    case 'baichuan2':
      return {
        architectures: ['BaichuanForCausalLM'], model_type: 'baichuan', ...common,
        model_max_length: o.maxPosition, rms_norm_eps: 1e-6, tie_word_embeddings: false, z_loss_weight: 0,
      };
    case 'qwen2':
      // Small Qwen2 checkpoints tie the head to the embeddings.
      return {
        architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', ...common,
        num_key_value_heads: kvHeads, rms_norm_eps: 1e-6, rope_theta: 1000000.0, attention_dropout: 0.0,
        max_window_layers: o.layers, sliding_window: o.maxPosition, use_sliding_window: false, tie_word_embeddings: true,
      };
  }
}

function generationConfig(arch: Arch, hf: Record<string, unknown>, idOf: (t: string) => number | null): Record<string, unknown> {
  const base = { bos_token_id: hf.bos_token_id, eos_token_id: hf.eos_token_id, pad_token_id: hf.pad_token_id };
  switch (arch) {
    // Qwen2-Instruct stops on either end token.
    case 'qwen2': return { ...base, eos_token_id: [idOf('<|im_end|>'), idOf('<|endoftext|>')] };
    // Baichuan2-Chat's generation code reads the role tokens from here.
    case 'baichuan2': return { ...base, user_token_id: idOf('<reserved_106>'), assistant_token_id: idOf('<reserved_107>') };
    default: return base;
  }
}

function tokenizerConfig(arch: Arch, tok: TokenizerJson, maxPosition: number): Record<string, unknown> {
  const t = ARCH_TOKENS[arch];
  const decoder: Record<string, unknown> = {};
  for (const a of tok.added_tokens) {
    decoder[String(a.id)] = { content: a.content, lstrip: a.lstrip, normalized: a.normalized, rstrip: a.rstrip, single_word: a.single_word, special: a.special };
  }
  const named = new Set([t.bos, t.eos, t.pad, t.unk]);
  return {
    added_tokens_decoder: decoder,
    additional_special_tokens: SPECIAL_TOKENS.filter((s) => !named.has(s)),
    bos_token: t.bos,
    eos_token: t.eos,
    pad_token: t.pad,
    unk_token: t.unk,
    chat_template: CHAT_TEMPLATES[arch],
    // Keeps decode(encode(x)) == x in transformers too.
    clean_up_tokenization_spaces: false,
    model_max_length: maxPosition,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
}

/** Random weights whose signals keep their scale through the network: untied embeddings N(0, 1),
 *  each matrix N(0, 1/fan_in), norms 1, biases N(0, 0.02). HF's pretraining init (every weight
 *  N(0, 0.02)) gives an untrained network whose output barely depends on its input, and LoRA on
 *  such a base only learns the targets' unigram distribution; this one lets adapters fit data,
 *  which is what tests and the demo need from a random model. Either way the untrained loss on
 *  random tokens is near ln(vocab), as a fresh HF model's is. */
function randomTensors(c: NativeModelConfig, seed: number): TensorToWrite[] {
  const normal = normalSampler(seed);
  return expectedTensors(c).map(({ name, shape }) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (/(norm|ln_f)\.weight$/.test(name)) data.fill(1);
    else {
      const std = embeddingStd(name, shape, c) ?? (shape.length === 2 ? 1 / Math.sqrt(shape[1]) : 0.02);
      for (let i = 0; i < data.length; i++) data[i] = std * normal();
    }
    return { name, dtype: 'F32' as const, shape, data };
  });
}

/** The embedding's std, undefined for other tensors. A tied embedding is the head as well: N(0, 1)
 *  rows would make logits sqrt(hidden) times too large (a Qwen2 of hidden 256 started at loss 186
 *  on random tokens, ln(vocab) being 7.6), so it is a matrix, N(0, 1/hidden), and logits stay near
 *  unit scale. Bloom's half that again: its embedding LayerNorm puts every token's own embedding
 *  into the residual at full scale, and a head as large as that favours the tokens already seen
 *  (loss ln(vocab) + 1.5); the LayerNorm makes the input side indifferent to the scale. */
function embeddingStd(name: string, shape: number[], c: NativeModelConfig): number | undefined {
  if (!/(embed_tokens|word_embeddings)\.weight$/.test(name)) return undefined;
  if (!c.tieWordEmbeddings) return 1;
  return (c.arch === 'bloom' ? 0.5 : 1) / Math.sqrt(shape[1]);
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

// data/demo.jsonl sits two folders above this file both in src/model/ and in the built dist/model/.
const DEMO_DATA = fileURLToPath(new URL('../../data/demo.jsonl', import.meta.url));

// Keys of Firefly/ShareGPT/ChatML records that hold labels, not text worth tokenizing.
const NON_TEXT_KEYS = new Set(['conversation_id', 'category', 'id', 'source', 'type', 'role', 'from']);

/** Every text string in data/demo.jsonl, or the built-in list when the file is absent. */
export function defaultTexts(): string[] {
  if (!fs.existsSync(DEMO_DATA)) return BUILTIN_TEXTS;
  const texts: string[] = [];
  const collect = (v: unknown): void => {
    if (typeof v === 'string') texts.push(v);
    else if (Array.isArray(v)) v.forEach(collect);
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) if (!NON_TEXT_KEYS.has(k)) collect(x);
  };
  fs.readFileSync(DEMO_DATA, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try {
      collect(JSON.parse(line));
    } catch {
      throw new SftError(`${DEMO_DATA}:${i + 1}: not valid JSON; fix the line or delete the file to use the built-in texts.`);
    }
  });
  return texts.length ? texts : BUILTIN_TEXTS;
}

// Written for this project: short everyday sentences in both languages, so the tokenizer learns
// common English words and Chinese characters.
const BUILTIN_TEXTS = [
  '你好！有什么可以帮你的吗？', 'Hello! How can I help you today?',
  '今天天气很好，我们去公园散步吧。', 'The weather is nice today, so let us take a walk in the park.',
  '中国的首都是北京。', 'The capital of China is Beijing.',
  '日本的首都是东京。', 'The capital of Japan is Tokyo.',
  '法国的首都是巴黎。', 'The capital of France is Paris.',
  '一年有十二个月，一周有七天。', 'A year has twelve months and a week has seven days.',
  '水在零摄氏度结冰，在一百摄氏度沸腾。', 'Water freezes at zero degrees Celsius and boils at one hundred.',
  '我喜欢读书、写字和听音乐。', 'I like reading books, writing and listening to music.',
  '请把这句话翻译成英文。', 'Please translate this sentence into Chinese.',
  '学习一门新的语言需要时间和耐心。', 'Learning a new language takes time and patience.',
  '太阳从东方升起，从西方落下。', 'The sun rises in the east and sets in the west.',
  '地球绕着太阳转，月亮绕着地球转。', 'The earth goes around the sun, and the moon goes around the earth.',
  '三加五等于八，十减四等于六。', 'Three plus five is eight, and ten minus four is six.',
  '猫和狗都是常见的宠物。', 'Cats and dogs are both common pets.',
  '苹果是红色的，香蕉是黄色的。', 'Apples are red and bananas are yellow.',
  '谢谢你的帮助，祝你有美好的一天！', 'Thank you for your help, have a nice day!',
  '我不知道这个问题的答案。', 'I do not know the answer to this question.',
  '请问现在几点了？现在是下午三点。', 'What time is it now? It is three o\'clock in the afternoon.',
  '机器学习是人工智能的一个分支。', 'Machine learning is a branch of artificial intelligence.',
  '语言模型根据前面的文字预测下一个词。', 'A language model predicts the next word from the words before it.',
  '写一首关于春天的短诗。', 'Write a short poem about spring.',
  '春天来了，花儿开了，小鸟在树上唱歌。', 'Spring has come, the flowers are blooming and the birds sing in the trees.',
  '北京是一座历史悠久的城市。', 'Beijing is a city with a long history.',
  '长城是世界上最长的城墙。', 'The Great Wall is the longest wall in the world.',
  '我们应该多喝水，多运动，早点睡觉。', 'We should drink more water, exercise more and go to bed early.',
  '这本书很有意思，我已经看了两遍。', 'This book is very interesting; I have read it twice.',
  '你叫什么名字？我是一个人工智能助手。', 'What is your name? I am an AI assistant.',
  '一公里等于一千米，一米等于一百厘米。', 'One kilometre is one thousand metres, and one metre is one hundred centimetres.',
  '如果明天下雨，我们就在家里看电影。', 'If it rains tomorrow, we will stay at home and watch a movie.',
  '请用一句话总结这篇文章。', 'Please summarize this article in one sentence.',
];

// Chat templates, string for string as Firefly registers them (yangjianxin1/Firefly:component/template.py),
// for the model families sft runs (Llama: llama2, llama3, yi, deepseek, vicuna, ziya2; Qwen2: qwen;
// Baichuan: baichuan, baichuan2; Bloom: default), plus two formats Firefly users trained with before
// templates existed (see firefly_legacy and human_assistant below).
// A sample is {prefix}{system part}{user}{assistant}{user}{assistant}..., each part tokenized on its own.
// Placeholders: {content}; {stop_token} and {bos_token}, the tokenizer's EOS and BOS token texts.
// Only the template's own text may hold special tokens: {content} is text (formatParts marks which is which).
// The model's own Jinja chat_template is the other kind of template (chat-template.ts).
import { SftError } from '../errors.js';
import type { TextPart } from '../tokenizer/types.js';
import type { ModelChatTemplate } from './chat-template.js';

/** A built-in template or the model's own chat_template. */
export type ChatTemplate = FormatTemplate | ModelChatTemplate;

/** The name under which a model's own Jinja chat_template is chosen. */
export const CHAT_TEMPLATE = 'chat_template';

export interface FormatTemplate {
  kind?: 'format';
  name: string;
  /** Written once before everything, system part included (firefly_legacy's BOS). Absent: nothing. */
  prefixFormat?: string;
  /** Absent: the template has no system part and a record's system text is ignored. */
  systemFormat?: string;
  /** Ends with the assistant prefix, so a prompt for generation is system + turns up to here. */
  userFormat: string;
  /** Carries the end-of-turn token(s) after {content}; they are trained on. */
  assistantFormat: string;
  defaultSystem?: string;
  /** Texts that end a generated answer, besides the tokenizer's EOS id. */
  stopWords: string[];
  /** The tokens the template writes to lay out turns. Besides the tokenizer's special tokens (always
   *  protected), these may come only from the template, never from a message: Baichuan's
   *  "<reserved_102>" is a user-defined piece that sentencepiece would otherwise match in any text.
   *  "[INST]" is not listed: Llama-2 spells it with ordinary pieces, so it cannot be told from text.
   *  Absent: none. */
  markers?: string[];
}

const LLAMA2_SYSTEM =
  'You are a helpful, respectful and honest assistant. ' +
  'Always answer as helpfully as possible, while being safe. ' +
  'Your answers should not include any harmful, unethical, ' +
  'racist, sexist, toxic, dangerous, or illegal content. ' +
  'Please ensure that your responses are socially unbiased and positive in nature.\n\n' +
  'If a question does not make any sense, or is not factually coherent, ' +
  "explain why instead of answering something not correct. " +
  "If you don't know the answer to a question, please don't share false information.";

const TEMPLATES: FormatTemplate[] = [
  {
    name: 'default',
    systemFormat: 'System: {content}\n\n',
    userFormat: 'User: {content}\nAssistant: ',
    assistantFormat: '{content} {stop_token}',
    stopWords: [],
    markers: [],
  },
  {
    name: 'baichuan',
    userFormat: '<reserved_102>{content}<reserved_103>',
    assistantFormat: '{content}</s>',
    stopWords: ['</s>'],
    markers: ['<reserved_102>', '<reserved_103>', '</s>'],
  },
  {
    name: 'baichuan2',
    userFormat: '<reserved_106>{content}<reserved_107>',
    assistantFormat: '{content}</s>',
    stopWords: ['</s>'],
    markers: ['<reserved_106>', '<reserved_107>', '</s>'],
  },
  {
    name: 'qwen',
    systemFormat: '<|im_start|>system\n{content}<|im_end|>\n',
    userFormat: '<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n',
    assistantFormat: '{content}<|im_end|>\n',
    defaultSystem: 'You are a helpful assistant.',
    stopWords: ['<|im_end|>'],
    markers: ['<|im_start|>', '<|im_end|>'],
  },
  {
    name: 'llama2',
    systemFormat: '<<SYS>>\n{content}\n<</SYS>>\n\n',
    userFormat: '[INST]{content}[/INST]',
    assistantFormat: '{content} </s>',
    defaultSystem: LLAMA2_SYSTEM,
    stopWords: ['</s>'],
    markers: ['</s>'],
  },
  {
    // Firefly's llama3: the system part carries BOS, so a sample without a system has none (as there).
    name: 'llama3',
    systemFormat: '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>',
    userFormat: '<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    assistantFormat: '{content}<|eot_id|>',
    stopWords: ['<|eot_id|>'],
    markers: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  },
  {
    name: 'yi',
    systemFormat: '<|im_start|>system\n{content}<|im_end|>\n',
    userFormat: '<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n',
    assistantFormat: '{content}<|im_end|>\n',
    stopWords: ['<|im_end|>'],
    markers: ['<|im_start|>', '<|im_end|>'],
  },
  {
    name: 'deepseek',
    userFormat: 'User: {content}\n\nAssistant: ',
    assistantFormat: '{content}<｜end▁of▁sentence｜>',
    stopWords: ['<｜end▁of▁sentence｜>'],
    markers: ['<｜end▁of▁sentence｜>'],
  },
  {
    name: 'vicuna',
    systemFormat: '{content}\n',
    userFormat: 'USER: {content} ASSISTANT:',
    assistantFormat: '{content}</s>',
    defaultSystem:
      'A chat between a curious user and an artificial intelligence assistant. ' +
      "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    stopWords: ['</s>'],
    markers: ['</s>'],
  },
  {
    name: 'ziya2',
    userFormat: '<human>:{content} <bot>:',
    assistantFormat: '{content}</s>',
    stopWords: ['</s>'],
    markers: ['</s>'],
  },
  {
    // Firefly before its templates (component/dataset.py SFTDataset, May 2023 to January 2024, for
    // every model but ChatGLM, Mistral, Zephyr and Qwen-1): "<s>input1</s>target1</s>input2</s>...",
    // BOS once, each message followed by EOS, targets with their EOS trained; no system part.
    name: 'firefly_legacy',
    prefixFormat: '{bos_token}',
    userFormat: '{content}{stop_token}',
    assistantFormat: '{content}{stop_token}',
    stopWords: [],
    markers: [],
  },
  {
    // The PEFT prompt-tuning write-up for Langboat/bloom-1b4-zh on alpaca data (the seed's
    // configs/bloom-1b4-prompt-tuning.json): ("Human: " + instruction + "\n" + input).strip() +
    // "\n\nAssistant: ", then output + EOS, tokenized apart; loss on the output and EOS only.
    // sft joins instruction and input as for every alpaca record (formats.ts), which gives the same
    // text unless the instruction is empty or starts with whitespace.
    name: 'human_assistant',
    userFormat: 'Human: {content}\n\nAssistant: ',
    assistantFormat: '{content}{stop_token}',
    stopWords: [],
    markers: [],
  },
];

/** The built-in templates' names. */
export const BUILT_IN_NAMES: readonly string[] = TEMPLATES.map((t) => t.name);
/** Every name a config or --template may give. */
export const TEMPLATE_NAMES: readonly string[] = [...BUILT_IN_NAMES, CHAT_TEMPLATE];

export function getTemplate(name: string): FormatTemplate {
  const t = TEMPLATES.find((x) => x.name === name);
  if (t) return t;
  if (name === CHAT_TEMPLATE) throw new SftError(`template "${CHAT_TEMPLATE}" is the model's own chat_template: it needs the tokenizer (resolveTemplate)`);
  throw new SftError(`unknown chat template "${name}" — choose one of: ${TEMPLATE_NAMES.join(', ')}`);
}

export function isModelTemplate(t: ChatTemplate): t is ModelChatTemplate {
  return t.kind === 'jinja';
}

/** Whether a record's system text reaches the model under this template. */
export function hasSystemPart(t: ChatTemplate): boolean {
  return isModelTemplate(t) ? t.hasSystem : t.systemFormat !== undefined;
}

/** The tokenizer's token texts a format's {stop_token} / {bos_token} stand for. */
export interface FormatTokens {
  eos?: string;
  bos?: string;
}

/** Fills a format. Replaces by splitting, not String.replace: content may hold "$&" or "{content}". */
export function fillFormat(format: string, content: string, tokens?: string | FormatTokens): string {
  return formatParts(format, content, tokens)
    .map((p) => p.text)
    .join('');
}

/** A format filled, as parts: the format's own text and the stop token are the template's; the
 *  content is text, whatever it spells. `tokens`: the EOS text, or the EOS and BOS texts. */
export function formatParts(format: string, content: string, tokens?: string | FormatTokens): TextPart[] {
  const { eos, bos } = typeof tokens === 'string' || tokens === undefined ? { eos: tokens, bos: undefined } : tokens;
  const parts: TextPart[] = [];
  for (const piece of format.split(/(\{content\}|\{stop_token\}|\{bos_token\})/)) {
    if (piece === '{content}') parts.push({ text: content });
    else if (piece === '{stop_token}' || piece === '{bos_token}') {
      const text = piece === '{stop_token}' ? eos : bos;
      const which = piece === '{stop_token}' ? 'EOS' : 'BOS';
      if (text === undefined)
        throw new SftError(`this chat template writes the ${which} token but the tokenizer names none — set ${which.toLowerCase()}_token in tokenizer_config.json or pick another template`);
      parts.push({ text, fromTemplate: true });
    } else if (piece.length > 0) parts.push({ text: piece, fromTemplate: true });
  }
  return parts;
}

/** The strings messages may not turn into tokens: every built-in template's markers (text written for
 *  one template may be trained or served with another), this template's own, and the EOS token when
 *  its formats write it through {stop_token}. */
export function templateMarkers(template: FormatTemplate, eosToken?: string, bosToken?: string): string[] {
  const formats = [template.prefixFormat, template.systemFormat, template.userFormat, template.assistantFormat];
  const markers = new Set([...BUILT_IN_MARKERS, ...(template.markers ?? [])]);
  if (formats.some((f) => f?.includes('{stop_token}')) && eosToken !== undefined) markers.add(eosToken);
  if (formats.some((f) => f?.includes('{bos_token}')) && bosToken !== undefined) markers.add(bosToken);
  return [...markers];
}

/** Every built-in template's markers: the model's own chat_template protects them too. */
export function builtInMarkers(): readonly string[] {
  return BUILT_IN_MARKERS;
}

const BUILT_IN_MARKERS = [...new Set(TEMPLATES.flatMap((t) => t.markers ?? []))];

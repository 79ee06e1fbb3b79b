// Chat templates, string for string as Firefly registers them (yangjianxin1/Firefly:component/template.py).
// A sample is {system part}{user}{assistant}{user}{assistant}..., each part tokenized on its own.
// Placeholders: {content}, and {stop_token} (the tokenizer's EOS token text; only "default" uses it).
// Only the template's own text may hold special tokens: {content} is text (formatParts marks which is which).
import { SftError } from '../errors.js';
import type { TextPart } from '../tokenizer/types.js';

export interface ChatTemplate {
  name: string;
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

const TEMPLATES: ChatTemplate[] = [
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
];

export const TEMPLATE_NAMES: readonly string[] = TEMPLATES.map((t) => t.name);

export function getTemplate(name: string): ChatTemplate {
  const t = TEMPLATES.find((x) => x.name === name);
  if (!t) throw new SftError(`unknown chat template "${name}" — choose one of: ${TEMPLATE_NAMES.join(', ')}`);
  return t;
}

/** Fills a format. Replaces by splitting, not String.replace: content may hold "$&" or "{content}". */
export function fillFormat(format: string, content: string, stopToken?: string): string {
  return formatParts(format, content, stopToken)
    .map((p) => p.text)
    .join('');
}

/** A format filled, as parts: the format's own text and the stop token are the template's; the
 *  content is text, whatever it spells. */
export function formatParts(format: string, content: string, stopToken?: string): TextPart[] {
  const parts: TextPart[] = [];
  for (const piece of format.split(/(\{content\}|\{stop_token\})/)) {
    if (piece === '{content}') parts.push({ text: content });
    else if (piece === '{stop_token}') {
      if (stopToken === undefined)
        throw new SftError('this chat template writes the EOS token but the tokenizer names none — set eos_token in tokenizer_config.json or pick another template');
      parts.push({ text: stopToken, fromTemplate: true });
    } else if (piece.length > 0) parts.push({ text: piece, fromTemplate: true });
  }
  return parts;
}

/** The strings messages may not turn into tokens: every built-in template's markers (text written for
 *  one template may be trained or served with another), this template's own, and the EOS token when
 *  its formats write it through {stop_token}. */
export function templateMarkers(template: ChatTemplate, eosToken?: string): string[] {
  const writesEos = [template.systemFormat, template.userFormat, template.assistantFormat].some((f) => f?.includes('{stop_token}'));
  const markers = new Set([...BUILT_IN_MARKERS, ...(template.markers ?? [])]);
  if (writesEos && eosToken !== undefined) markers.add(eosToken);
  return [...markers];
}

const BUILT_IN_MARKERS = [...new Set(TEMPLATES.flatMap((t) => t.markers ?? []))];

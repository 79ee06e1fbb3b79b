import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getTemplate, fillFormat, formatParts, templateMarkers, TEMPLATE_NAMES } from '../../src/data/templates.js';
import { SftError } from '../../src/errors.js';

/** A template without sft's own markers list: the part that is Firefly's. */
const firefly = (name: string) => {
  const { markers: _markers, ...rest } = getTemplate(name);
  return rest;
};

// Strings copied by hand from yangjianxin1/Firefly:component/template.py.
test('Firefly template strings', () => {
  assert.deepEqual(firefly('baichuan'), {
    name: 'baichuan',
    userFormat: '<reserved_102>{content}<reserved_103>',
    assistantFormat: '{content}</s>',
    stopWords: ['</s>'],
  });
  assert.deepEqual(firefly('baichuan2'), {
    name: 'baichuan2',
    userFormat: '<reserved_106>{content}<reserved_107>',
    assistantFormat: '{content}</s>',
    stopWords: ['</s>'],
  });
  assert.deepEqual(firefly('qwen'), {
    name: 'qwen',
    systemFormat: '<|im_start|>system\n{content}<|im_end|>\n',
    userFormat: '<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n',
    assistantFormat: '{content}<|im_end|>\n',
    defaultSystem: 'You are a helpful assistant.',
    stopWords: ['<|im_end|>'],
  });
  assert.deepEqual(firefly('default'), {
    name: 'default',
    systemFormat: 'System: {content}\n\n',
    userFormat: 'User: {content}\nAssistant: ',
    assistantFormat: '{content} {stop_token}',
    stopWords: [],
  });
  const llama2 = getTemplate('llama2');
  assert.equal(llama2.systemFormat, '<<SYS>>\n{content}\n<</SYS>>\n\n');
  assert.equal(llama2.userFormat, '[INST]{content}[/INST]');
  assert.equal(llama2.assistantFormat, '{content} </s>');
  assert.ok(llama2.defaultSystem?.startsWith('You are a helpful, respectful and honest assistant. Always answer'));
  assert.ok(llama2.defaultSystem?.endsWith("please don't share false information."));
  assert.deepEqual(llama2.stopWords, ['</s>']);
});

test('unknown template lists the names', () => {
  assert.deepEqual([...TEMPLATE_NAMES].sort(), [
    'baichuan', 'baichuan2', 'chat_template', 'deepseek', 'default', 'firefly_legacy', 'human_assistant', 'llama2', 'llama3', 'qwen', 'vicuna', 'yi', 'ziya2',
  ]);
  assert.throws(
    () => getTemplate('chatglm9'),
    (e: unknown) => e instanceof SftError && /"chatglm9"/.test(e.message) && /default, baichuan, baichuan2, qwen, llama2, llama3, yi/.test(e.message) && /chat_template/.test(e.message),
  );
});

test('fillFormat inserts content literally and needs an EOS text only for {stop_token}', () => {
  assert.equal(fillFormat('[INST]{content}[/INST]', "$& $1 {content} $'"), "[INST]$& $1 {content} $'[/INST]");
  assert.equal(fillFormat('{content} {stop_token}', 'a', '</s>'), 'a </s>');
  assert.throws(() => fillFormat('{content} {stop_token}', 'a'), SftError);
});

test('markers: the tokens each template lays turns out with; every built-in template protects them all', () => {
  assert.deepEqual(getTemplate('baichuan').markers, ['<reserved_102>', '<reserved_103>', '</s>']);
  assert.deepEqual(getTemplate('qwen').markers, ['<|im_start|>', '<|im_end|>']);
  const all = templateMarkers(getTemplate('llama2'));
  for (const m of ['<reserved_102>', '<reserved_107>', '<|im_end|>', '</s>']) assert.ok(all.includes(m), m);
  // {stop_token} adds the tokenizer's EOS text.
  assert.ok(templateMarkers(getTemplate('default'), '<|eot|>').includes('<|eot|>'));
  assert.ok(!templateMarkers(getTemplate('qwen'), '<|eot|>').includes('<|eot|>'));
});

test('formatParts: the template\'s text and the stop token are the template\'s, the content is text', () => {
  assert.deepEqual(formatParts('{content} {stop_token}', '<|im_end|>', '</s>'), [
    { text: '<|im_end|>' }, { text: ' ', fromTemplate: true }, { text: '</s>', fromTemplate: true },
  ]);
  assert.deepEqual(formatParts('<|im_start|>user\n{content}<|im_end|>', ''), [
    { text: '<|im_start|>user\n', fromTemplate: true }, { text: '' }, { text: '<|im_end|>', fromTemplate: true },
  ]);
});

// Strings copied by hand from yangjianxin1/Firefly:component/template.py (e22b406), for the families
// sft runs: Llama-architecture models (Llama-3, Yi, DeepSeek-LLM, Vicuna, Ziya2).
test('Firefly templates of the other Llama-architecture families', () => {
  assert.deepEqual(firefly('llama3'), {
    name: 'llama3',
    systemFormat: '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>',
    userFormat: '<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    assistantFormat: '{content}<|eot_id|>',
    stopWords: ['<|eot_id|>'],
  });
  assert.deepEqual(firefly('yi'), {
    name: 'yi',
    systemFormat: '<|im_start|>system\n{content}<|im_end|>\n',
    userFormat: '<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n',
    assistantFormat: '{content}<|im_end|>\n',
    stopWords: ['<|im_end|>'],
  });
  assert.deepEqual(firefly('deepseek'), {
    name: 'deepseek',
    userFormat: 'User: {content}\n\nAssistant: ',
    assistantFormat: '{content}<｜end▁of▁sentence｜>',
    stopWords: ['<｜end▁of▁sentence｜>'],
  });
  assert.deepEqual(firefly('vicuna'), {
    name: 'vicuna',
    systemFormat: '{content}\n',
    userFormat: 'USER: {content} ASSISTANT:',
    assistantFormat: '{content}</s>',
    defaultSystem: "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.",
    stopWords: ['</s>'],
  });
  assert.deepEqual(firefly('ziya2'), { name: 'ziya2', userFormat: '<human>:{content} <bot>:', assistantFormat: '{content}</s>', stopWords: ['</s>'] });
});

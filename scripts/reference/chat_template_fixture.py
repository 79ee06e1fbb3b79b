#!/usr/bin/env python3
"""Reference ids for template "chat_template" (src/data/chat-template.ts) and for the Jinja form of
each built-in template that `sft merge` writes.

Writes test/fixtures/chat-template/qwen2.json and builtin-rendered.json. Only ids, masks and text of
public conversations are written (MOSS-003 SFT samples from ../shared, CC BY-NC).

Run from the repository root (needs ../shared and the reference venv with transformers):
    npx tsx scripts/reference/dump_builtin_jinja.ts      # the Jinja forms, from sft itself
    /tmp/venv/bin/python scripts/reference/chat_template_fixture.py

qwen2.json: for conversations of ../shared/conversations/moss003_sft_without_plugins_converted.jsonl
(some given a system message), transformers' apply_chat_template(tokenize=True) with the Qwen2.5
chat_template that ../shared/tokenizers/qwen2-reconstructed/tokenizer_config.json ships:
  ids     the whole conversation (add_generation_prompt=False)
  prompt  the conversation without its last answer, add_generation_prompt=True
  mask    transformers' return_assistant_tokens_mask under the same template with each answer's
          content and its "<|im_end|>\\n" inside {% generation %} (the rendered text is checked to be
          the same as the shipped template's): the reference for the trained spans.
builtin-rendered.json: each built-in's Jinja rendered by transformers (tokenize=False; bos/eos of the
Llama-2 tokenizer's, <s> and </s>, passed as apply_chat_template's keyword arguments) for a few conversations, to compare with sft's own formats.
"""
import json
from pathlib import Path

from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / 'shared'
OUT = ROOT / 'test' / 'fixtures' / 'chat-template'

TAGGED = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content + '<|im_end|>\\n' }}{% endgeneration %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def moss(n):
    out = []
    with open(SHARED / 'conversations' / 'moss003_sft_without_plugins_converted.jsonl', encoding='utf8') as f:
        for line in f:
            rec = json.loads(line)
            turns = rec['conversation']
            # Multi-turn ones, short enough for a fast test; contents trimmed as sft's reader trims them.
            if len(turns) < 2 or sum(len(t['human']) + len(t['assistant']) for t in turns) > 1500:
                continue
            msgs = []
            for t in turns:
                msgs.append({'role': 'user', 'content': t['human'].strip()})
                msgs.append({'role': 'assistant', 'content': t['assistant'].strip()})
            out.append(msgs)
            if len(out) == n:
                return out
    return out


def main():
    tok = AutoTokenizer.from_pretrained(str(SHARED / 'tokenizers' / 'qwen2-reconstructed'))
    convs = moss(5)
    convs[1] = [{'role': 'system', 'content': '你是一个乐于助人的助手。'}] + convs[1]
    convs[3] = [{'role': 'system', 'content': ''}] + convs[3]
    cases = []
    for msgs in convs:
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=False, return_dict=True)['input_ids']
        text = tok.apply_chat_template(msgs, tokenize=False)
        tagged = tok.apply_chat_template(msgs, chat_template=TAGGED, tokenize=False)
        assert tagged == text, 'the tagged template must render as the shipped one'
        masked = tok.apply_chat_template(msgs, chat_template=TAGGED, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        assert list(masked['input_ids']) == list(ids)
        prompt = tok.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=True)['input_ids']
        cases.append({'messages': msgs, 'ids': list(ids), 'mask': list(masked['assistant_masks']), 'prompt': list(prompt)})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / 'qwen2.json').write_text(json.dumps({'tagged_template': TAGGED, 'cases': cases}, ensure_ascii=False) + '\n', encoding='utf8')

    jinja = json.loads((OUT / 'builtin-jinja.json').read_text(encoding='utf8'))
    probes = [
        [{'role': 'user', 'content': '你好'}, {'role': 'assistant', 'content': 'Hi there.'}],
        [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b'}, {'role': 'user', 'content': 'c'}],
        [{'role': 'system', 'content': ''}, {'role': 'user', 'content': 'x "quoted" \\ y'}, {'role': 'assistant', 'content': 'z'}],
    ]
    # apply_chat_template passes its keyword arguments over the tokenizer's special tokens.
    rendered = {name: [tok.apply_chat_template(p, chat_template=src, tokenize=False, bos_token='<s>', eos_token='</s>') for p in probes] for name, src in jinja.items()}
    (OUT / 'builtin-rendered.json').write_text(
        json.dumps({'bos': '<s>', 'eos': '</s>', 'probes': probes, 'jinja': jinja, 'rendered': rendered}, ensure_ascii=False, indent=1) + '\n', encoding='utf8')


if __name__ == '__main__':
    main()

"""Prompt-tuning references from peft (PROMPT_TUNING on the tiny llama and bloom of make_fixtures.py).

Writes test/fixtures/reference/<arch>/prompt-tuning/ (adapter saved by peft's save_pretrained) and
expected-prompt.safetensors + expected-prompt.json: logits of the real positions, the loss and the
gradient of the virtual-token embeddings.

Run from the repo root with a Python that has torch, transformers and peft:
  python3 -m venv .venv-ref && .venv-ref/bin/pip install --index-url file:///opt/pypi/simple \
      --extra-index-url file:///opt/pypi-more/simple torch transformers peft safetensors
  .venv-ref/bin/python scripts/reference/make_prompt_tuning_fixture.py
"""
import json
import os

import torch
from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from safetensors.torch import save_file
from transformers import BloomForCausalLM, LlamaForCausalLM

NV = 4

for arch, cls in [('llama', LlamaForCausalLM), ('bloom', BloomForCausalLM)]:
  HERE = f'test/fixtures/reference/{arch}'
  torch.manual_seed(0)
  base = cls.from_pretrained(HERE, dtype=torch.float32, attn_implementation='eager')
  cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=NV, prompt_tuning_init=PromptTuningInit.RANDOM)
  model = get_peft_model(base, cfg)
  with torch.no_grad():
      emb = model.prompt_encoder['default'].embedding.weight
      emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(7)) * 0.7)

  expected = json.load(open(os.path.join(HERE, 'expected.json')))
  ids = torch.tensor(expected['ids'])
  labels = torch.tensor(expected['labels'])
  out = model(input_ids=ids, labels=labels)
  out.loss.backward()
  logits = out.logits[:, NV:, :].detach().contiguous()  # peft returns the virtual positions too
  grad = model.prompt_encoder['default'].embedding.weight.grad.detach().contiguous()

  model.save_pretrained(os.path.join(HERE, 'prompt-tuning'))
  save_file({'logits': logits, 'grad.prompt_embeddings': grad}, os.path.join(HERE, 'expected-prompt.safetensors'))
  json.dump({'num_virtual_tokens': NV, 'loss': out.loss.item()}, open(os.path.join(HERE, 'expected-prompt.json'), 'w'), indent=1)
  print(arch, 'loss', out.loss.item())

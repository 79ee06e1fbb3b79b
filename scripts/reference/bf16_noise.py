"""How much PyTorch's own bf16 changes loss and LoRA gradients on the reference fixtures: the same
bf16-rounded weights run once in fp32 and once in bf16, per-tensor norm-wise differences printed.
This is the yardstick for the CUDA backend's bf16 tolerances (test/cuda/test_models.cu): no bf16
implementation can be closer to fp32 than this at fixture size.

    python3 -m venv .venv-ref && .venv-ref/bin/pip install torch transformers peft safetensors
    .venv-ref/bin/python scripts/reference/bf16_noise.py llama     # or qwen2

Measured 2026-12-02 (torch 2.13 cpu, transformers 5.18, peft 0.21): llama loss 4.9e-4, median
gradient 2.5e-2, worst 1.0e-1 (layer 1 q_proj lora_A); qwen2 loss 8.1e-4, median 4.5e-2, worst
9.0e-2 (layer 1 k_proj lora_A). (Baichuan's remote code is not in the fixture folders.)
"""
import json, sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
arch = sys.argv[1]
d = f"test/fixtures/reference/{arch}"
exp = json.load(open(f"{d}/expected.json"))
ids = torch.tensor(exp["ids"]); labels = torch.tensor(exp["labels"])
def grads(dtype):
    m = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, trust_remote_code=True)
    m = PeftModel.from_pretrained(m, f"{d}/peft-adapter", is_trainable=True)
    m = m.to(torch.bfloat16).to(dtype)  # the same (bf16-rounded) values in both runs
    out = m(input_ids=ids, labels=labels)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.float() for n, p in m.named_parameters() if p.requires_grad}
l32, g32 = grads(torch.float32)
l16, g16 = grads(torch.bfloat16)
errs = sorted(((float((g16[n]-g32[n]).norm()/g32[n].norm()), n) for n in g32))
print(arch, "loss rel", abs(l16-l32)/abs(l32), "worst grads:", [(f"{e:.3e}", n.split("model.")[-1]) for e, n in errs[-3:]], "median", errs[len(errs)//2][0])

"""The PyTorch + peft side of bench/cpu-vs-torch: the same job as sft-worker.ts, on the same model folder
and the same ids. Prints one JSON line. Run by run.ts with the benchmark's virtual environment:
    python torch-worker.py '<json job>'
"""
import contextlib
import json
import resource
import sys
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main(job):
    torch.set_num_threads(job["threads"])
    torch.manual_seed(1)
    w = job["workload"]
    # sdpa: PyTorch's fused scaled-dot-product attention, transformers' default and fastest CPU path.
    model = AutoModelForCausalLM.from_pretrained(job["modelDir"], dtype=torch.float32, attn_implementation="sdpa")
    ids_np = np.fromfile(job["idsFile"], dtype=np.int32).astype(np.int64)
    first_loss = None
    greedy = None

    if w["kind"] == "train":
        if w["checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        ids = torch.from_numpy(ids_np).view(w["batch"], w["seq"])
        state = {"step": 0}

        # bf16: the CPU autocast HF's Trainer uses for bf16=True (weights stay fp32, matmuls in bf16).
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if w.get("bf16") else contextlib.nullcontext

        def unit():
            nonlocal first_loss
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if state["step"] == 0:
                first_loss = loss.item()
            state["step"] += 1

    elif w["kind"] == "score":
        model.eval()
        ids = torch.from_numpy(ids_np).view(1, w["seq"])

        def unit():
            with torch.inference_mode():
                model(input_ids=ids).logits

    else:
        model.eval()
        ids = torch.from_numpy(ids_np).view(1, w["prompt"])
        n = w["tokens"]

        def unit():
            nonlocal greedy
            with torch.inference_mode():
                out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                     pad_token_id=0, eos_token_id=None)
            if greedy is None:
                greedy = out[0, ids.shape[1]:].tolist()

    for _ in range(job["warmup"]):
        unit()
    t0 = time.perf_counter()
    for _ in range(job["units"]):
        unit()
    seconds = time.perf_counter() - t0
    per_unit = w["batch"] * w["seq"] if w["kind"] == "train" else w["seq"] if w["kind"] == "score" else w["tokens"]
    print(json.dumps({
        "seconds": seconds, "units": job["units"], "tokensPerSecond": per_unit * job["units"] / seconds,
        "rssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "firstLoss": first_loss, "greedy": greedy,
    }))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

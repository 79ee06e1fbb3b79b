"""Reads a GGUF file that `sft export` wrote back with gguf-py (llama.cpp's own Python reader) and
compares it with the Hugging Face folder it came from, independently of sft's code:

  - metadata: general.architecture, the hyperparameters under llama.cpp's keys (from config.json),
    the token list, types and merges (from tokenizer.json), special ids, the chat template
  - tensors: llama.cpp's names and layouts rebuilt here in numpy as convert_hf_to_gguf.py does
    (q/k rope permutation, Baichuan's W_pack split, Baichuan2's NormHead, Bloom's qkv reorder),
    then each stored tensor dequantized by gguf-py (gguf.quants) and compared with those f32 weights

    python gguf_check.py MODEL_DIR OUT_DIR FILE.gguf [FILE.gguf ...]

Prints a JSON list, one object per file: {"file", "errors": [...], "tensors": [{name, type, shape,
offset, bytes, max_err, rel_rmse, exact_f16, exact_q8_0, bound}], "metadata": {...}}.
OUT_DIR/<file stem>/<tensor name>.f32 gets gguf-py's dequantized values of each tensor (raw
little-endian f32), for the caller to compare with sft's own decoder. Needs numpy, safetensors, gguf.
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFReader
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.permute: rotary halves of each head -> adjacent pairs
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(d: Path, cfg: dict) -> dict:
    t = {}
    for f in sorted(d.glob("*.safetensors")):
        t.update(load_file(str(f)))
    arch = cfg["architectures"][0]
    out = {}
    if arch.startswith("Bloom"):
        t = {k.removeprefix("transformer."): v for k, v in t.items()}
        H, nh = cfg.get("hidden_size", cfg.get("n_embed")), cfg.get("n_head", cfg.get("num_attention_heads"))
        out["token_embd.weight"] = t["word_embeddings.weight"]
        out["token_embd_norm.weight"] = t["word_embeddings_layernorm.weight"]
        out["token_embd_norm.bias"] = t["word_embeddings_layernorm.bias"]
        for l in range(cfg["n_layer"]):
            p, b = f"h.{l}.", f"blk.{l}."
            qkv = t[p + "self_attention.query_key_value.weight"].reshape(nh, 3, H // nh, H)
            out[b + "attn_qkv.weight"] = np.concatenate([qkv[:, i].reshape(-1, H) for i in range(3)])
            qb = t[p + "self_attention.query_key_value.bias"].reshape(nh, 3, H // nh)
            out[b + "attn_qkv.bias"] = np.concatenate([qb[:, i].reshape(-1) for i in range(3)])
            for ours, theirs in (("attn_norm", "input_layernorm"), ("attn_output", "self_attention.dense"),
                                 ("ffn_norm", "post_attention_layernorm"), ("ffn_up", "mlp.dense_h_to_4h"),
                                 ("ffn_down", "mlp.dense_4h_to_h")):
                out[b + ours + ".weight"] = t[p + theirs + ".weight"]
                out[b + ours + ".bias"] = t[p + theirs + ".bias"]
        out["output_norm.weight"], out["output_norm.bias"] = t["ln_f.weight"], t["ln_f.bias"]
        if "lm_head.weight" in t and not cfg.get("tie_word_embeddings", True):
            out["output.weight"] = t["lm_head.weight"]
        return out

    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    H = cfg["hidden_size"]
    out["token_embd.weight"] = t["model.embed_tokens.weight"]
    for l in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        out[b + "attn_norm.weight"] = t[p + "input_layernorm.weight"]
        if "Baichuan" in arch or "BaiChuan" in arch:
            w = t[p + "self_attn.W_pack.weight"]
            out[b + "attn_q.weight"] = permute(w[:H], nh)
            out[b + "attn_k.weight"] = permute(w[H:2 * H], nh)
            out[b + "attn_v.weight"] = w[2 * H:]
        else:
            rope = (lambda w, h: permute(w, h)) if arch == "LlamaForCausalLM" else (lambda w, h: w)
            out[b + "attn_q.weight"] = rope(t[p + "self_attn.q_proj.weight"], nh)
            out[b + "attn_k.weight"] = rope(t[p + "self_attn.k_proj.weight"], nkv)
            out[b + "attn_v.weight"] = t[p + "self_attn.v_proj.weight"]
            for x in "qkv":
                if p + f"self_attn.{x}_proj.bias" in t:
                    out[b + f"attn_{x}.bias"] = t[p + f"self_attn.{x}_proj.bias"]
        out[b + "attn_output.weight"] = t[p + "self_attn.o_proj.weight"]
        out[b + "ffn_norm.weight"] = t[p + "post_attention_layernorm.weight"]
        out[b + "ffn_gate.weight"] = t[p + "mlp.gate_proj.weight"]
        out[b + "ffn_up.weight"] = t[p + "mlp.up_proj.weight"]
        out[b + "ffn_down.weight"] = t[p + "mlp.down_proj.weight"]
    out["output_norm.weight"] = t["model.norm.weight"]
    tied = cfg.get("tie_word_embeddings", False)
    head = t["model.embed_tokens.weight"] if tied else t["lm_head.weight"]
    if arch == "BaichuanForCausalLM":  # Baichuan2's NormHead: rows divided by their L2 norm
        h = head.astype(np.float64)
        out["output.weight"] = (h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    elif not tied:
        out["output.weight"] = head
    return out


def field(r: GGUFReader, key: str):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def check(file: str, model_dir: str, out_dir: str) -> dict:
    d, o = Path(model_dir), Path(out_dir) / Path(file).stem
    o.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((d / "config.json").read_text())
    r = GGUFReader(file)
    errors = []

    def want(key, value):
        got = field(r, key)
        ok = abs(got - value) <= 1e-6 * abs(value) if isinstance(value, float) and got is not None else got == value
        if not ok:
            errors.append(f"{key}: {str(got)[:200]} != {str(value)[:200]}")

    arch_name = cfg["architectures"][0]
    a = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "BaiChuanForCausalLM": "baichuan",
         "BaichuanForCausalLM": "baichuan", "BloomForCausalLM": "bloom"}[arch_name]
    want("general.architecture", a)
    if a == "bloom":
        H = cfg.get("hidden_size", cfg.get("n_embed"))
        want(f"{a}.embedding_length", H)
        want(f"{a}.block_count", cfg["n_layer"])
        want(f"{a}.feed_forward_length", 4 * H)
        want(f"{a}.attention.head_count", cfg.get("n_head", cfg.get("num_attention_heads")))
        want(f"{a}.attention.layer_norm_epsilon", float(cfg.get("layer_norm_epsilon", 1e-5)))
    else:
        want(f"{a}.context_length", cfg["max_position_embeddings"])
        want(f"{a}.embedding_length", cfg["hidden_size"])
        want(f"{a}.block_count", cfg["num_hidden_layers"])
        want(f"{a}.feed_forward_length", cfg["intermediate_size"])
        want(f"{a}.attention.head_count", cfg["num_attention_heads"])
        want(f"{a}.attention.head_count_kv", cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
        want(f"{a}.rope.freq_base", float(cfg.get("rope_theta", 10000.0)))
        want(f"{a}.attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"]))

    tok = json.loads((d / "tokenizer.json").read_text())
    tcfg = json.loads((d / "tokenizer_config.json").read_text()) if (d / "tokenizer_config.json").exists() else {}
    V = cfg["vocab_size"]
    names = [f"[PAD{i}]" for i in range(V)]
    types = [gguf.TokenType.UNUSED] * V
    for t, i in tok["model"]["vocab"].items():
        names[i], types[i] = t, gguf.TokenType.NORMAL
    for x in tok.get("added_tokens", []):
        names[x["id"]] = x["content"]
        types[x["id"]] = gguf.TokenType.CONTROL if x.get("special") else gguf.TokenType.USER_DEFINED
    want("tokenizer.ggml.model", "gpt2")
    want("tokenizer.ggml.tokens", names)
    want("tokenizer.ggml.token_type", [int(x) for x in types])
    want("tokenizer.ggml.merges", [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    ids = {x["content"]: x["id"] for x in tok.get("added_tokens", [])}
    for key, gkey in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "padding_token_id")):
        if tcfg.get(key):
            want(f"tokenizer.ggml.{gkey}", ids[tcfg[key] if isinstance(tcfg[key], str) else tcfg[key]["content"]])
    if tcfg.get("chat_template"):
        want("tokenizer.chat_template", tcfg["chat_template"])
    metadata = {"chat_template": field(r, "tokenizer.chat_template"), "file_type": field(r, "general.file_type"),
                "pre": field(r, "tokenizer.ggml.pre")}

    expected = expected_tensors(d, cfg)
    got_names = [t.name for t in r.tensors]
    if sorted(got_names) != sorted(expected):
        errors.append(f"tensor names: extra {sorted(set(got_names) - set(expected))}, missing {sorted(set(expected) - set(got_names))}")
    report = []
    for t in r.tensors:
        if t.name not in expected:
            continue
        ref = expected[t.name].astype(np.float32)
        qtype = gguf.GGMLQuantizationType(t.tensor_type)
        shape = [int(x) for x in reversed(t.shape.tolist())]  # gguf-py gives ne (innermost first)
        if shape != list(ref.shape):
            errors.append(f"{t.name}: shape {shape} != {list(ref.shape)}")
            continue
        raw = np.asarray(t.data)
        deq = dequantize(raw, qtype).reshape(ref.shape).astype(np.float32) if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else raw.astype(np.float32).reshape(ref.shape)
        deq.astype("<f4").tofile(o / f"{t.name}.f32")
        err = np.abs(deq - ref)
        rms = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) or 1.0
        item = {"name": t.name, "type": qtype.name, "shape": shape, "offset": int(t.data_offset), "bytes": int(t.n_bytes),
                "max_err": float(err.max()), "rel_rmse": float(np.sqrt(np.mean(err.astype(np.float64) ** 2)) / rms)}
        if qtype == gguf.GGMLQuantizationType.F16:
            item["exact_f16"] = bool(np.array_equal(deq, ref.astype(np.float16).astype(np.float32)))
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            # gguf-py's Q8_0 quantizer is ggml's reference, bit for bit
            item["exact_q8_0"] = bool(np.array_equal(quantize(ref, qtype), raw.reshape(quantize(ref, qtype).shape)))
            blocks = ref.reshape(-1, 32)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            item["bound"] = bool(np.all(err.reshape(-1, 32) <= d * (0.5 + 127 * 2.0 ** -11) + 1e-12))
        report.append(item)
    return {"file": file, "errors": errors, "tensors": report, "metadata": metadata}


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: python gguf_check.py MODEL_DIR OUT_DIR FILE.gguf [FILE.gguf ...]")
    print(json.dumps([check(f, sys.argv[1], sys.argv[2]) for f in sys.argv[3:]]))

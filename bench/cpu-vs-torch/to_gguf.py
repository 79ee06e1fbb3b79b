"""Writes a Hugging Face Llama folder (the benchmark's init-model output: safetensors, fp32, a
byte-level BPE tokenizer.json) as an f32 GGUF file for llama.cpp, so the decode row can run
llama.cpp on exactly the weights sft and transformers read.

    python to_gguf.py <model dir> <out.gguf>

Needs numpy, safetensors and the gguf package. Only what the benchmark's models use is handled
(llama architecture, no biases, no rope scaling); anything else is refused rather than guessed.
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
import gguf


def rope_rows_to_interleaved(w: np.ndarray, heads: int) -> np.ndarray:
    """HF stores each head's q/k rows as [first halves of the rotary pairs, second halves]
    (rotate_half); llama.cpp's rope pairs adjacent rows. Per head, row i of half h goes to
    row 2 i + h."""
    rows, cols = w.shape
    hd = rows // heads
    return w.reshape(heads, 2, hd // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main(model_dir: str, out: str) -> None:
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        sys.exit(f"{d}/config.json: model_type {cfg.get('model_type')!r}, only llama is converted")
    if cfg.get("rope_scaling"):
        sys.exit(f"{d}/config.json: rope_scaling is not converted")
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    V = cfg["vocab_size"]
    tensors = {}
    for f in sorted(d.glob("*.safetensors")):
        tensors.update(load_file(str(f)))

    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(H // nh)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    # Tokenizer: byte-level BPE ("gpt2" in llama.cpp's terms); ids the file does not name (the
    # embedding has more rows than the tokenizer has tokens) become unused placeholders.
    tok = json.loads((d / "tokenizer.json").read_text())
    if tok["model"]["type"] != "BPE":
        sys.exit(f"{d}/tokenizer.json: a {tok['model']['type']} tokenizer, only byte-level BPE is converted")
    names = {i: f"[PAD{i}]" for i in range(V)}
    types = {i: gguf.TokenType.UNUSED for i in range(V)}
    for t, i in tok["model"]["vocab"].items():
        if i < V:
            names[i], types[i] = t, gguf.TokenType.NORMAL
    for a in tok.get("added_tokens", []):
        if a["id"] < V:
            names[a["id"]] = a["content"]
            types[a["id"]] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([names[i] for i in range(V)])
    w.add_token_types([int(types[i]) for i in range(V)])
    w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id), ("pad_token_id", w.add_pad_token_id)):
        if cfg.get(key) is not None:
            add(int(cfg[key]))

    def put(name: str, a: np.ndarray) -> None:
        w.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))

    put("token_embd.weight", tensors["model.embed_tokens.weight"])
    for l in range(L):
        p = f"model.layers.{l}."
        put(f"blk.{l}.attn_norm.weight", tensors[p + "input_layernorm.weight"])
        put(f"blk.{l}.attn_q.weight", rope_rows_to_interleaved(tensors[p + "self_attn.q_proj.weight"], nh))
        put(f"blk.{l}.attn_k.weight", rope_rows_to_interleaved(tensors[p + "self_attn.k_proj.weight"], nkv))
        put(f"blk.{l}.attn_v.weight", tensors[p + "self_attn.v_proj.weight"])
        put(f"blk.{l}.attn_output.weight", tensors[p + "self_attn.o_proj.weight"])
        put(f"blk.{l}.ffn_norm.weight", tensors[p + "post_attention_layernorm.weight"])
        put(f"blk.{l}.ffn_gate.weight", tensors[p + "mlp.gate_proj.weight"])
        put(f"blk.{l}.ffn_up.weight", tensors[p + "mlp.up_proj.weight"])
        put(f"blk.{l}.ffn_down.weight", tensors[p + "mlp.down_proj.weight"])
    put("output_norm.weight", tensors["model.norm.weight"])
    head = tensors.get("lm_head.weight")
    put("output.weight", head if head is not None else tensors["model.embed_tokens.weight"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python to_gguf.py <model dir> <out.gguf>")
    main(sys.argv[1], sys.argv[2])

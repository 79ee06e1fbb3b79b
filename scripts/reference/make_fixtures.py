"""Reference fixtures for test/model/reference.test.ts: what transformers + peft compute (fp32, CPU).

For each architecture variant sft supports — llama (GQA), qwen2 (q/k/v bias, tied embeddings,
rope_theta 1e6), baichuan (fused W_pack), baichuan2 (W_pack + NormHead), bloom (ALiBi with 6 heads,
a non-power-of-two count; LayerNorm; GELU; per-head interleaved query_key_value) — this writes a tiny random
model in the family's real Hugging Face layout into test/fixtures/reference/<arch>/ and records, for
fixed token ids and labels:
  - the base model's logits and HF's shifted mean loss;
  - the same with a LoRA adapter made by peft (saved with save_pretrained into peft-adapter/), plus
    the gradient of that loss for every lora_A / lora_B weight;
  - the logits and loss with an adapter that sft wrote (sft-adapter/, made by write_sft_adapter.ts
    through src/io/peft.ts writeLoraAdapter) and peft loaded with PeftModel.from_pretrained.
into expected.safetensors (tensors) and expected.json (ids, labels, losses, notes).

Run from the repository root (it calls node for the sft adapter, so the native addon must be built):
    /tmp/refenv/bin/python scripts/reference/make_fixtures.py [ARCH ...]   (default: all)
The reference stack (CPU) can be recreated with
    python3 -m venv .venv-ref && .venv-ref/bin/pip install --index-url file:///opt/pypi/simple \
        --extra-index-url file:///opt/pypi-more/simple torch transformers peft safetensors sentencepiece protobuf
Made with torch 2.13 (cpu), transformers 5.18, peft 0.21.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import load_file, save_file
from transformers import (
    BloomForCausalLM,
    GenerationMixin,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2ForCausalLM,
)
from transformers.modeling_outputs import CausalLMOutput
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = os.path.join('test', 'fixtures', 'reference')
SHAPE = dict(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=48, vocab=128)
# Two rows of seven tokens; labels as a chat template would mask them (prompt positions -100).
IDS = [[1, 17, 54, 99, 3, 120, 7], [1, 88, 23, 64, 127, 45, 12]]
LABELS = [[-100, -100, 54, 99, 3, 120, 7], [-100, 88, 23, -100, -100, 45, 12]]
LORA = dict(r=4, lora_alpha=8)  # the adapter peft makes; sft's own adapter uses r 8, alpha 4
LLAMA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
BAICHUAN_TARGETS = ['W_pack', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
BLOOM_TARGETS = ['query_key_value', 'dense', 'dense_h_to_4h', 'dense_4h_to_h']
# Bloom's MLP is always 4 x hidden; 6 heads make the ALiBi slopes take their non-power-of-two branch.
BLOOM_SHAPE = dict(hidden=36, layers=2, heads=6, vocab=128)
PEFT_PREFIX = 'base_model.model.'

torch.set_grad_enabled(True)
torch.use_deterministic_algorithms(True)


# ---- config.json as each family's published checkpoints spell it ---------------------------------

def hf_config(arch):
    if arch == 'bloom':  # as bigscience/bloom-560m (sizes as n_head / n_layer / hidden_size)
        b = BLOOM_SHAPE
        return {'apply_residual_connection_post_layernorm': False, 'architectures': ['BloomForCausalLM'],
                'attention_dropout': 0.0, 'bos_token_id': 1, 'eos_token_id': 2, 'hidden_dropout': 0.0,
                'hidden_size': b['hidden'], 'initializer_range': 0.02, 'layer_norm_epsilon': 1e-05,
                'model_type': 'bloom', 'n_head': b['heads'], 'n_layer': b['layers'], 'pad_token_id': 3,
                'pretraining_tp': 1, 'slow_but_exact': False, 'torch_dtype': 'float32', 'use_cache': True,
                'vocab_size': b['vocab']}
    s = SHAPE
    common = {
        'bos_token_id': 1,
        'eos_token_id': 2,
        'hidden_act': 'silu',
        'hidden_size': s['hidden'],
        'initializer_range': 0.02,
        'intermediate_size': s['intermediate'],
        'max_position_embeddings': 64,
        'num_attention_heads': s['heads'],
        'num_hidden_layers': s['layers'],
        'torch_dtype': 'float32',
        'use_cache': True,
        'vocab_size': s['vocab'],
    }
    if arch == 'llama':  # as meta-llama/Llama-2-7b-hf, with GQA (num_key_value_heads < heads)
        return {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', **common,
                'num_key_value_heads': s['kv_heads'], 'pad_token_id': 0, 'pretraining_tp': 1,
                'rms_norm_eps': 1e-05, 'rope_scaling': None, 'rope_theta': 10000.0, 'tie_word_embeddings': False}
    if arch == 'qwen2':  # as Qwen/Qwen2-0.5B: q/k/v bias, tied head, rope_theta 1e6
        return {'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', **common,
                'attention_dropout': 0.0, 'max_window_layers': s['layers'], 'num_key_value_heads': s['kv_heads'],
                'rms_norm_eps': 1e-06, 'rope_theta': 1000000.0, 'sliding_window': 64,
                'tie_word_embeddings': True, 'use_sliding_window': False}
    auto_map = {'AutoConfig': 'configuration_baichuan.BaichuanConfig',
                'AutoModelForCausalLM': 'modeling_baichuan.BaichuanForCausalLM'}
    if arch == 'baichuan':  # as baichuan-inc/Baichuan-7B: no K/V head count, RoPE base fixed at 10000
        return {'architectures': ['BaiChuanForCausalLM'], 'auto_map': auto_map, 'model_type': 'baichuan', **common,
                'pad_token_id': 0, 'rms_norm_eps': 1e-06, 'tie_word_embeddings': False}
    if arch == 'baichuan2':  # as baichuan-inc/Baichuan2-7B-Base
        return {'architectures': ['BaichuanForCausalLM'], 'auto_map': auto_map, 'model_type': 'baichuan', **common,
                'model_max_length': 64, 'pad_token_id': 0, 'rms_norm_eps': 1e-06, 'tie_word_embeddings': False,
                'z_loss_weight': 0}
    raise ValueError(arch)


def bloom_shapes():
    b = BLOOM_SHAPE
    H, V = b['hidden'], b['vocab']
    shapes = {'transformer.word_embeddings.weight': [V, H]}

    def norm(name):
        shapes[name + '.weight'] = [H]
        shapes[name + '.bias'] = [H]

    def linear(name, out, inp):
        shapes[name + '.weight'] = [out, inp]
        shapes[name + '.bias'] = [out]

    norm('transformer.word_embeddings_layernorm')
    for i in range(b['layers']):
        p = f'transformer.h.{i}.'
        norm(p + 'input_layernorm')
        linear(p + 'self_attention.query_key_value', 3 * H, H)
        linear(p + 'self_attention.dense', H, H)
        norm(p + 'post_attention_layernorm')
        linear(p + 'mlp.dense_h_to_4h', 4 * H, H)
        linear(p + 'mlp.dense_4h_to_h', H, 4 * H)
    norm('transformer.ln_f')
    return shapes  # lm_head is tied to word_embeddings: BloomForCausalLM saves no lm_head.weight


def random_weights(arch, gen):
    """HF-named tensors with scales that keep signals alive: embeddings N(0,1) (N(0,0.3²) when tied),
    matrices N(0,1/fan_in), norm weights 1+N(0,0.1²) (so a dropped norm weight shows), biases N(0,0.2²)
    (LayerNorm biases too)."""
    if arch == 'bloom':
        return scaled_random(bloom_shapes(), gen, tied=True)
    s = SHAPE
    H, I, V = s['hidden'], s['intermediate'], s['vocab']
    baichuan = arch.startswith('baichuan')
    kv = (H // s['heads']) * (s['heads'] if baichuan else s['kv_heads'])
    shapes = {'model.embed_tokens.weight': [V, H]}
    for i in range(s['layers']):
        p = f'model.layers.{i}.'
        shapes[p + 'input_layernorm.weight'] = [H]
        if baichuan:
            shapes[p + 'self_attn.W_pack.weight'] = [3 * H, H]
        else:
            shapes[p + 'self_attn.q_proj.weight'] = [H, H]
            shapes[p + 'self_attn.k_proj.weight'] = [kv, H]
            shapes[p + 'self_attn.v_proj.weight'] = [kv, H]
            if arch == 'qwen2':
                shapes[p + 'self_attn.q_proj.bias'] = [H]
                shapes[p + 'self_attn.k_proj.bias'] = [kv]
                shapes[p + 'self_attn.v_proj.bias'] = [kv]
        shapes[p + 'self_attn.o_proj.weight'] = [H, H]
        shapes[p + 'post_attention_layernorm.weight'] = [H]
        shapes[p + 'mlp.gate_proj.weight'] = [I, H]
        shapes[p + 'mlp.up_proj.weight'] = [I, H]
        shapes[p + 'mlp.down_proj.weight'] = [H, I]
    shapes['model.norm.weight'] = [H]
    if arch != 'qwen2':  # Qwen2's small checkpoints tie the head and ship no lm_head.weight
        shapes['lm_head.weight'] = [V, H]
    return scaled_random(shapes, gen, tied=arch == 'qwen2')


def scaled_random(shapes, gen, tied):
    out = {}
    for name, shape in shapes.items():
        x = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith('norm.weight') or name.endswith('ln_f.weight'):
            x = 1 + 0.1 * x
        elif name.endswith('.bias'):
            x = 0.2 * x
        elif 'embed_tokens' in name or 'word_embeddings.' in name:
            # A tied head reuses these rows: N(0,1) would give logits of std sqrt(H) and a saturated
            # softmax (loss ~20), which tests the softmax poorly.
            x = 0.3 * x if tied else x
        else:
            x = x / math.sqrt(shape[1])
        out[name] = x.contiguous()
    return out


# ---- Baichuan: no class in transformers, so a small module of our own --------------------------------
# It follows baichuan-inc's modeling_baichuan.py (7B and Baichuan2-7B): one fused W_pack [3H, H] whose
# rows are Q, K, V in that order, RoPE (rotate_half, base 10000), RMSNorm, SwiGLU MLP, and for
# Baichuan2 a NormHead (each lm_head row L2-normalised: F.normalize, i.e. x / max(||x||, 1e-12)).
# It exists so that peft sees the real module names (W_pack); its numbers are checked against
# transformers' LlamaForCausalLM run on the same weights with W_pack split (see baichuan_as_llama).

class BaichuanConfig(PretrainedConfig):
    model_type = 'baichuan'

    def __init__(self, vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, rms_norm_eps=1e-6, norm_head=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.norm_head = norm_head
        kwargs['tie_word_embeddings'] = False
        super().__init__(**kwargs)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.hidden = c.num_attention_heads, c.hidden_size
        self.W_pack = nn.Linear(c.hidden_size, 3 * c.hidden_size, bias=False)
        self.o_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=False)

    def forward(self, x, cos, sin):
        B, T, H = x.shape
        d = H // self.heads
        q, k, v = (t.view(B, T, self.heads, d).transpose(1, 2) for t in self.W_pack(x).split(H, dim=-1))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float('-inf'))
        y = scores.softmax(-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, H))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class BaichuanModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.head_dim = c.hidden_size // c.num_attention_heads

    def forward(self, ids):
        d = self.head_dim
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        freqs = torch.arange(ids.shape[1], dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class BaichuanForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = BaichuanConfig

    def __init__(self, c):
        super().__init__(c)
        self.model = BaichuanModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):  # weights always come from the fixture's safetensors
        pass

    def forward(self, input_ids=None, labels=None, **_):
        h = self.model(input_ids)
        w = F.normalize(self.lm_head.weight) if self.config.norm_head else self.lm_head.weight
        logits = F.linear(h, w)
        loss = None if labels is None else shifted_loss(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits)


def shifted_loss(logits, labels):
    """HF's causal-LM loss: position t predicts labels[t+1], mean over labels != -100."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def baichuan_own(arch, cfg, weights):
    c = BaichuanConfig(vocab_size=cfg['vocab_size'], hidden_size=cfg['hidden_size'],
                       intermediate_size=cfg['intermediate_size'], num_hidden_layers=cfg['num_hidden_layers'],
                       num_attention_heads=cfg['num_attention_heads'], rms_norm_eps=cfg['rms_norm_eps'],
                       norm_head=arch == 'baichuan2')
    m = BaichuanForCausalLM(c).float()
    m.load_state_dict(weights, strict=True)
    return m.eval()


def baichuan_as_llama(arch, cfg, weights):
    """The same network as transformers' LlamaForCausalLM: W_pack rows split into q/k/v (Q, K, V in
    that order), no GQA, RoPE base 10000, and for Baichuan2 the lm_head rows L2-normalised once
    (NormHead with a frozen head)."""
    H = cfg['hidden_size']
    lc = LlamaConfig(vocab_size=cfg['vocab_size'], hidden_size=H, intermediate_size=cfg['intermediate_size'],
                     num_hidden_layers=cfg['num_hidden_layers'], num_attention_heads=cfg['num_attention_heads'],
                     num_key_value_heads=cfg['num_attention_heads'], rms_norm_eps=cfg['rms_norm_eps'],
                     rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
                     attention_bias=False, mlp_bias=False)
    lc._attn_implementation = 'eager'
    m = LlamaForCausalLM(lc).float()
    sd = {}
    for name, t in weights.items():
        if name.endswith('W_pack.weight'):
            base = name[: -len('W_pack.weight')]
            q, k, v = t.split(H, dim=0)
            sd[base + 'q_proj.weight'], sd[base + 'k_proj.weight'], sd[base + 'v_proj.weight'] = q, k, v
        elif name == 'lm_head.weight' and arch == 'baichuan2':
            sd[name] = F.normalize(t)
        else:
            sd[name] = t
    m.load_state_dict(sd, strict=True)
    return m.eval()


def load_reference(arch, folder, cfg, weights):
    """A fresh base model (peft modifies the one it wraps)."""
    if arch == 'llama':
        return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation='eager').eval()
    if arch == 'qwen2':
        return Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation='eager').eval()
    if arch == 'bloom':
        return BloomForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation='eager').eval()
    return baichuan_own(arch, cfg, weights)


def bloom_slopes(model, ids):
    """The per-head slopes transformers' build_alibi_tensor uses (the bias at key position 1)."""
    heads = model.config.n_head
    alibi = model.transformer.build_alibi_tensor(torch.ones_like(ids), heads, torch.float32)
    return alibi.view(ids.shape[0], heads, ids.shape[1])[0, :, 1]


# ---- one architecture ------------------------------------------------------------------------------

def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def make(arch, seed):
    folder = os.path.join(ROOT, arch)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    cfg = hf_config(arch)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
        f.write('\n')
    gen = torch.Generator().manual_seed(seed)
    weights = random_weights(arch, gen)
    save_file(weights, os.path.join(folder, 'model.safetensors'), metadata={'format': 'pt'})

    ids = torch.tensor(IDS)
    labels = torch.tensor(LABELS)
    expected = {}
    notes = {}

    # Base model.
    base = load_reference(arch, folder, cfg, weights)
    if arch == 'qwen2':
        assert base.config.rope_parameters['rope_theta'] == 1e6, base.config.rope_parameters
        assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr(), 'qwen2 head not tied'
    if arch == 'bloom':
        assert base.lm_head.weight.data_ptr() == base.transformer.word_embeddings.weight.data_ptr(), 'bloom head not tied'
        # Every tensor came from the file (nothing left at its random init).
        for name, t in weights.items():
            assert torch.equal(base.state_dict()[name], t), name
        notes['bloom_alibi_slopes'] = bloom_slopes(base, ids).tolist()
    with torch.no_grad():
        out = base(input_ids=ids, labels=labels)
    if arch.startswith('baichuan'):
        with torch.no_grad():
            ref = baichuan_as_llama(arch, cfg, weights)(input_ids=ids, labels=labels)
        e = rel_err(out.logits, ref.logits)
        assert e < 1e-5, f'{arch}: own Baichuan module vs LlamaForCausalLM-with-split: {e}'
        notes['baichuan_module_vs_llama_split_rel_err'] = e
        out = ref  # the recorded numbers are transformers' own
    expected['logits.base'] = out.logits
    notes['loss_base'] = out.loss.item()

    # LoRA by peft, every linear layer, B random so the adapter changes the output.
    targets = BAICHUAN_TARGETS if arch.startswith('baichuan') else BLOOM_TARGETS if arch == 'bloom' else LLAMA_TARGETS
    model = get_peft_model(load_reference(arch, folder, cfg, weights), LoraConfig(
        r=LORA['r'], lora_alpha=LORA['lora_alpha'], lora_dropout=0.0, target_modules=targets,
        init_lora_weights=False, task_type='CAUSAL_LM'))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if '.lora_' in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert name.startswith(PEFT_PREFIX) and '.default.' in name, name
            grads[name[len(PEFT_PREFIX):].replace('.default.', '.')] = p.grad.detach().clone()
    layers = BLOOM_SHAPE['layers'] if arch == 'bloom' else SHAPE['layers']
    assert len(grads) == layers * len(targets) * 2, sorted(grads)
    expected['logits.peft'] = out.logits.detach()
    notes['loss_peft'] = out.loss.item()
    for name, g in grads.items():
        expected['grad.' + name] = g
    model.save_pretrained(os.path.join(folder, 'peft-adapter'))
    # Keep the fixture small and free of machine-specific text.
    readme = os.path.join(folder, 'peft-adapter', 'README.md')
    if os.path.exists(readme):
        os.remove(readme)
    if arch.startswith('baichuan'):
        # Cross-check the W_pack LoRA path too: merged into the base, split, run as Llama.
        merged = {k: v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}
        with torch.no_grad():
            ref = baichuan_as_llama(arch, cfg, merged)(input_ids=ids)
        e = rel_err(expected['logits.peft'], ref.logits)
        assert e < 1e-5, f'{arch}: peft on own module vs merged LlamaForCausalLM-with-split: {e}'
        notes['peft_module_vs_merged_llama_split_rel_err'] = e

    # An adapter that sft wrote (src/io/peft.ts writeLoraAdapter), loaded by peft as it stands.
    sft_dir = os.path.join(folder, 'sft-adapter')
    subprocess.run(['node', '--import', 'tsx', 'scripts/reference/write_sft_adapter.ts', folder, sft_dir, str(seed)],
                   check=True)
    model = PeftModel.from_pretrained(load_reference(arch, folder, cfg, weights), sft_dir)
    loaded = {n[len(PEFT_PREFIX):].replace('.default.', '.'): p for n, p in model.named_parameters() if '.lora_' in n}
    written = load_file(os.path.join(sft_dir, 'adapter_model.safetensors'))
    assert sorted(loaded) == sorted(k[len(PEFT_PREFIX):] for k in written), 'peft loaded other tensors than sft wrote'
    for k, t in written.items():
        assert torch.equal(loaded[k[len(PEFT_PREFIX):]].detach(), t), f'peft did not load {k} as written'
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    expected['logits.sft'] = out.logits
    notes['loss_sft'] = out.loss.item()
    notes['sft_adapter_effect_rel'] = rel_err(out.logits, expected['logits.base'])

    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(folder, 'expected.safetensors'),
              metadata={'format': 'pt'})
    with open(os.path.join(folder, 'expected.json'), 'w') as f:
        json.dump({'ids': IDS, 'labels': LABELS, 'lora': {**LORA, 'target_modules': targets}, **notes}, f, indent=2)
        f.write('\n')
    print(f"{arch}: loss base {notes['loss_base']:.6f}, peft {notes['loss_peft']:.6f}, sft adapter {notes['loss_sft']:.6f}")


def main():
    if not os.path.exists(os.path.join('scripts', 'reference', 'make_fixtures.py')):
        sys.exit('run from the repository root')
    archs = ['llama', 'qwen2', 'baichuan', 'baichuan2', 'bloom']
    wanted = sys.argv[1:] or archs
    for a in wanted:
        if a not in archs:
            sys.exit(f'unknown arch {a}; choose from {archs}')
    for seed, arch in enumerate(archs, start=1):  # a fixed seed per arch, whichever subset is remade
        if arch in wanted:
            make(arch, seed)


if __name__ == '__main__':
    main()

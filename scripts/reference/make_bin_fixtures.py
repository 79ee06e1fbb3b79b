"""Writes test/fixtures/torch-bin/: PyTorch .bin checkpoints (torch.save's zip format) and safetensors
copies of the same tensors, for the .bin reader tests (test/io/torch-bin.test.ts, test/model/weights.test.ts).

Recreate the Python environment (from the repository root):
  python3 -m venv .venv-ref && .venv-ref/bin/pip install --index-url file:///opt/pypi/simple \
      --extra-index-url file:///opt/pypi-more/simple torch transformers peft safetensors sentencepiece protobuf
then run:
  .venv-ref/bin/python scripts/reference/make_bin_fixtures.py

What it writes (all small; the folder stays well under 1 MB):
  tensors.bin / tensors.safetensors   F32, F16 (with -0, inf, a subnormal), BF16, a tied pair sharing one
                                      storage, two views into one storage at different offsets, a [1, 4]
                                      tensor whose size-1 dim has an odd stride, a 0-dim scalar, an
                                      nn.Parameter, an int64 buffer; saved as a module's state_dict(), so
                                      the pickle carries the OrderedDict's _metadata (BUILD opcode)
  sharded/                            the same tensors as two plain-dict shards + pytorch_model.bin.index.json
  many-views.bin / .safetensors       300 one-element views of one F16 storage: over 256 pickle memo entries
                                      (LONG_BINPUT/LONG_BINGET, as in a real 7B checkpoint) and offsets >= 256
  zip64.bin                           tensors.bin rewritten with ZIP64 records everywhere (torch.load reads it)
  compressed.bin                      tensors.bin re-zipped with DEFLATE (must be refused)
  transposed.bin                      a non-contiguous tensor (must be refused)
  float64.bin, neg-view.bin           a float64 weight; a tensor saved with torch's negative-view bit
  legacy.bin                          torch's pre-1.6 (non-zip) format
  malicious.bin                       a zip whose data.pkl calls os.system (GLOBAL 'os system')
  unexpected-global.bin               torch.save of a whole nn.Linear (GLOBAL torch.nn.modules.linear.Linear)
  baichuan-st/, baichuan-bin/,        one tiny random Baichuan-7B-shaped model (fused W_pack, fp16) as
  baichuan-bin-sharded/               model.safetensors, pytorch_model.bin, and two .bin shards + index
  baichuan-logits.json                transformers' LlamaForCausalLM logits for the same weights (fp32 compute)
"""
import collections
import json
import os
import shutil
import struct
import zipfile
import zlib

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'test', 'fixtures', 'torch-bin')


class Tiny(torch.nn.Module):
    """A module whose state_dict() has tied weights and an int64 buffer, as HF models do."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(6, 4)
        self.lm_head = torch.nn.Linear(4, 6, bias=False)
        self.lm_head.weight = self.embed.weight
        self.register_buffer('position_ids', torch.arange(8).unsqueeze(0))


def make_tensors():
    torch.manual_seed(0)
    sd = Tiny().state_dict()  # OrderedDict with a _metadata attribute
    assert sd['embed.weight'].data_ptr() == sd['lm_head.weight'].data_ptr()
    sd['f32.weight'] = torch.randn(3, 4)
    sd['f16.weight'] = torch.tensor([1.5, -0.0, float('inf'), 6e-8, -2.25], dtype=torch.float16)
    sd['bf16.weight'] = torch.randn(2, 3).to(torch.bfloat16)
    base = torch.randn(5, 3).half()
    sd['view.weight'] = base[2:]       # storage offset 6 into a 15-element storage
    sd['view0.weight'] = base[0:1]     # the same storage at offset 0
    sd['row.weight'] = torch.randn(4, 1).t()  # shape [1, 4], strides (1, 1): contiguous despite the odd stride
    sd['scalar'] = torch.tensor(3.25)
    sd['param.weight'] = torch.nn.Parameter(torch.randn(2, 2))  # pickled via _rebuild_parameter
    assert sd['view.weight'].storage_offset() == 6 and sd['row.weight'].stride() == (1, 1)
    return sd


def save_safetensors(sd, path):
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, path, metadata={'format': 'pt'})


def save_sharded(sd, folder, first_shard_keys, prefix='pytorch_model'):
    """As transformers 4.x save_pretrained(safe_serialization=False) did: plain dict shards plus an index."""
    os.makedirs(folder, exist_ok=True)
    shards = [{k: v for k, v in sd.items() if k in first_shard_keys}, {k: v for k, v in sd.items() if k not in first_shard_keys}]
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f'{prefix}-{i + 1:05d}-of-{len(shards):05d}.bin'
        torch.save(shard, os.path.join(folder, name))
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(folder, f'{prefix}.bin.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2)


def rewrite_zip64(src, dst):
    """Every size and offset field set to 0xFFFFFFFF with the real values in ZIP64 extra fields, plus the
    ZIP64 end records: the layout a >4 GB shard has, in a small file."""
    with zipfile.ZipFile(src) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    out, central = bytearray(), bytearray()
    for name, data in entries:
        offset, crc, n = len(out), zlib.crc32(data), len(data)
        nb = name.encode()
        local_extra = struct.pack('<HHQQ', 1, 16, n, n)
        out += struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(local_extra))
        out += nb + local_extra + data
        central_extra = struct.pack('<HHQQQ', 1, 24, n, n, offset)
        central += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                               len(nb), len(central_extra), 0, 0, 0, 0, 0xFFFFFFFF)
        central += nb + central_extra
    cd_offset = len(out)
    out += central
    z64_offset = len(out)
    out += struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_offset)
    out += struct.pack('<IIQI', 0x07064b50, 0, z64_offset, 1)
    out += struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, 'wb') as f:
        f.write(out)


def rezip_deflated(src, dst):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as w:
        for i in z.infolist():
            w.writestr(i.filename, z.read(i.filename))


def write_pickle_zip(dst, folder, pkl):
    """A zip laid out like torch.save's, around a hand-written data.pkl."""
    with zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as w:
        w.writestr(f'{folder}/data.pkl', pkl)
        w.writestr(f'{folder}/byteorder', 'little')
        w.writestr(f'{folder}/version', '3\n')


def binunicode(s):
    b = s.encode()
    return b'X' + struct.pack('<I', len(b)) + b


def make_malicious(dst):
    # {'w': os.system('echo pwned > /tmp/sft-pwned')}: an unpickler that trusted GLOBAL would run the shell.
    pkl = (b'\x80\x02' + b'}' + binunicode('w') + b'cos\nsystem\n' + binunicode('echo pwned > /tmp/sft-pwned')
           + b'\x85' + b'R' + b's' + b'.')
    write_pickle_zip(dst, 'malicious', pkl)


def make_baichuan(out):
    """A tiny Baichuan-7B-shaped checkpoint: Llama weights with q/k/v fused into W_pack (rows Q, K, V)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=64, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    llama = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in llama.parameters():  # larger than HF's 0.02 init so the logits depend on every weight
            p.normal_(0, 0.5)
    llama = llama.half().float()  # the values the fp16 checkpoint holds
    ids = torch.tensor([[1, 5, 9, 33, 2, 17, 60]])
    with torch.no_grad():
        logits = llama(ids).logits[0]
    with open(os.path.join(out, 'baichuan-logits.json'), 'w') as f:
        json.dump({'ids': ids[0].tolist(), 'vocab': 64, 'logits': [round(x, 7) for x in logits.flatten().tolist()]}, f)

    sd = {}
    for k, v in llama.state_dict().items():
        if '.k_proj.' in k or '.v_proj.' in k or '.rotary_emb.' in k:
            continue
        if '.q_proj.' in k:
            pre = k.split('.q_proj.')[0]
            v = torch.cat([llama.state_dict()[f'{pre}.{m}_proj.weight'] for m in 'qkv'])
            k = f'{pre}.W_pack.weight'
        sd[k] = v.half()
    config = {
        'architectures': ['BaiChuanForCausalLM'], 'model_type': 'baichuan', 'vocab_size': 64, 'hidden_size': 16,
        'intermediate_size': 32, 'num_hidden_layers': 2, 'num_attention_heads': 2, 'hidden_act': 'silu',
        'rms_norm_eps': 1e-6, 'max_position_embeddings': 64, 'initializer_range': 0.02, 'use_cache': True,
        'tie_word_embeddings': False, 'torch_dtype': 'float16', 'bos_token_id': 1, 'eos_token_id': 2, 'pad_token_id': 0,
    }
    for name in ['baichuan-st', 'baichuan-bin', 'baichuan-bin-sharded']:
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, 'config.json'), 'w') as f:
            json.dump(config, f, indent=2)
    save_safetensors(sd, os.path.join(out, 'baichuan-st', 'model.safetensors'))
    torch.save(sd, os.path.join(out, 'baichuan-bin', 'pytorch_model.bin'))
    first = {k for k in sd if k.startswith('model.embed_tokens.') or k.startswith('model.layers.0.')}
    save_sharded(sd, os.path.join(out, 'baichuan-bin-sharded'), first)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    p = lambda *n: os.path.join(OUT, *n)

    sd = make_tensors()
    torch.save(sd, p('tensors.bin'))
    save_safetensors(sd, p('tensors.safetensors'))
    first = {'embed.weight', 'lm_head.weight', 'f32.weight', 'view.weight', 'position_ids'}
    save_sharded(collections.OrderedDict(sd), p('sharded'), first)

    base = torch.arange(300, dtype=torch.float16) * 0.5
    views = {f'v{i}.weight': base[i:i + 1] for i in range(300)}
    torch.save(views, p('many-views.bin'))
    save_safetensors(views, p('many-views.safetensors'))
    rewrite_zip64(p('tensors.bin'), p('zip64.bin'))
    rezip_deflated(p('tensors.bin'), p('compressed.bin'))
    torch.save({'t.weight': torch.randn(3, 4).t()}, p('transposed.bin'))
    torch.save({'ok.weight': torch.randn(2), 'w64.weight': torch.randn(2, 2, dtype=torch.float64)}, p('float64.bin'))
    torch.save({'neg.weight': torch._neg_view(torch.randn(3))}, p('neg-view.bin'))
    torch.save({'w.weight': torch.randn(2)}, p('legacy.bin'), _use_new_zipfile_serialization=False)
    make_malicious(p('malicious.bin'))
    torch.save(torch.nn.Linear(2, 2), p('unexpected-global.bin'))
    make_baichuan(OUT)

    # The ZIP64 rewrite must still be a checkpoint torch reads, with the same tensors.
    a, b = torch.load(p('tensors.bin')), torch.load(p('zip64.bin'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f'wrote {OUT} ({total} bytes)')
    assert total < 1_000_000


if __name__ == '__main__':
    main()

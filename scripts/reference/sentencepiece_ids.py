#!/usr/bin/env python3
"""Reference ids for sft's sentencepiece reader (src/tokenizer/sentencepiece.ts).

Writes test/fixtures/sentencepiece/*.json: a fixed corpus, and for the real Baichuan-7B and Llama-2
tokenizer.model files in ../shared/tokenizers the ids and decoded text that sft must reproduce.
No model bytes are written, only ids, piece counts and public text.

Reference environment (CPU only):
    python3 -m venv .venv-ref && .venv-ref/bin/pip install --index-url file:///opt/pypi/simple \
        --extra-index-url file:///opt/pypi-more/simple torch transformers peft safetensors sentencepiece protobuf
Run from the repository root (needs ../shared):
    .venv-ref/bin/python scripts/reference/sentencepiece_ids.py

What "reference" means per model:
- baichuan-7b: the model's own tokenizer (tokenization_baichuan.py, a PreTrainedTokenizer whose
  _tokenize is sentencepiece's encode): text is cut at the special tokens (<s>, </s>, <unk>; no
  whitespace stripping, as their AddedTokens say lstrip/rstrip false) and each piece between them is
  sentencepiece-encoded on its own. Decoding mirrors that: each run of non-special ids is
  sentencepiece-decoded, special tokens are written as their text (or dropped when skipping).
  Also recorded, where they differ from that: plain sentencepiece on the whole line (special tokens
  are then spelled out in pieces), transformers 5.18 running a BaiChuanTokenizer-style slow class
  (it registers the special tokens with single_word false, so it agrees on every line), and
  transformers 5.18's fast LlamaTokenizer built from the same tokenizer.model (it drops Baichuan's
  nmt_nfkc normalizer and puts "▁" before the first segment only, so it often disagrees).
- llama-2 / llama-2-legacy: transformers 5.18 AutoTokenizer on a folder holding tokenizer.model,
  ../shared/tokenizers/llama-2/tokenizer_config.json (no "legacy" key: transformers 5.18 builds a
  non-legacy LlamaTokenizer; llama-2-legacy adds "legacy": true) and a tokenizer.json whose merges are
  ranked by piece score, as transformers' LlamaConverter ranks them (and as Llama-2's published
  tokenizer.json and sentencepiece do). Recorded where they differ: plain sentencepiece, and
  transformers 5.18 on tokenizer.model alone, which ranks merges by piece id (Llama-2's whitespace-only
  pieces, scored -1e9, then merge first: "a  b" -> ▁a ▁▁ b instead of ▁a ▁ ▁b).
"""
import atexit
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizer
from transformers.tokenization_utils_base import generate_merges

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "tokenizers")
OUT = os.path.join(ROOT, "test", "fixtures", "sentencepiece")

CORPUS = [
    "",
    " ",
    "   ",
    "\n",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "multiple   spaces    inside     text",
    "line one\nline two\n\nline four",
    "tabs\tbetween\t\twords",
    "\tindented with a tab",
    "windows\r\nline endings\r\n",
    "你好，世界！",
    "今天天气很好，我们去公园散步吧。",
    "北京是中华人民共和国的首都，有三千多年的建城史。",
    "我喜欢用Python写代码，也喜欢machine learning。",
    "GPT-4和Llama 2都是大语言模型（LLM）。",
    "今天是2023年7月15日，温度是35.6度。",
    "1234567890 3.14159265358979 -42 +7 1e-10",
    "圆周率约等于3.1415926535897932384626433832795028841971",
    "电话：138-0013-8000，邮编100080",
    "全角数字１２３４５和全角字母ＡＢＣｄｅｆ",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇨🇳",
    "😀",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "```python\nprint('hi')\n```",
    "<p>段落</p><br/><h1>标题</h1><!-- comment --> ---",
    "</s>",
    "<s>",
    "<unk>",
    "a</s>b",
    "end of answer</s>",
    "你好</s>",
    "<s>[INST] hi [/INST] hello </s>",
    "</s></s>",
    " </s> ",
    "<reserved_102>你好<reserved_103>",
    "<reserved_106>hi<reserved_107>",
    "<unk>x<s>y</s>z",
    "Rare: 𠮷 𪚥 ꙮ 𐌀𐌁 ᚠᚢᚦ",
    "𠀀𠀁𠀂",
    "Math: ∑ x² ≤ ½ · √2 ≈ 1.414",
    "ﬁ ﬂ ① ㍿ ™ … Ⅻ ｶﾀｶﾅ",
    "cafe\u0301 vs café",
    "no\u00a0break\u3000ideographic\u2003em space",
    "zero\u200bwidth\ufeffbom",
    "ctrl\x01char\x7f",
    "the ▁ lower block char",
    "Ünïcödé àccénts ñ ß ø",
    "Русский текст и ελληνικά",
    "日本語のテキストとカタカナ",
    "한국어 텍스트",
    "عربي مرحبا",
    "mixed中文English混合123测试test",
    "URL: https://example.com/path?q=1&r=2#frag",
    "email someone@example.org, @user #tag $100 50% a&b",
    "重复重复重复重复重复重复重复重复",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
]

# Baichuan-7B's tokenizer_config.json (baichuan-inc/Baichuan-7B): BaiChuanTokenizer via auto_map,
# no BOS/EOS added, bos/eos/unk as AddedTokens with lstrip/rstrip false and single_word true.
BAICHUAN_CONFIG = {
    "auto_map": {"AutoTokenizer": ["tokenization_baichuan.BaiChuanTokenizer", None]},
    "add_bos_token": False,
    "add_eos_token": False,
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": True},
    "clean_up_tokenization_spaces": False,
    "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": True},
    "model_max_length": 1000000000000000019884624838656,
    "sp_model_kwargs": {},
    "tokenizer_class": "BaiChuanTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<unk>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": True},
}


def split_on(text, specials):
    """Cuts text at the leftmost, longest special token: ["a", "</s>", "b"]."""
    out, i, start = [], 0, 0
    while i < len(text):
        hit = max((s for s in specials if text.startswith(s, i)), key=len, default=None)
        if hit is None:
            i += 1
            continue
        out += [text[start:i], hit]
        i += len(hit)
        start = i
    out.append(text[start:])
    return [p for p in out if p]


def chunked_encode(sp, text, specials):
    ids = []
    for part in split_on(text, specials):
        ids += [sp.piece_to_id(part)] if part in specials else sp.encode(part)
    return ids


def chunked_decode(sp, ids, special_ids, skip):
    out, run = "", []
    for i in ids + [None]:
        if i is None or i in special_ids:
            out += sp.decode(run) if run else ""
            run = []
            if i is not None and not skip:
                out += sp.id_to_piece(i)
        else:
            run.append(i)
    return out


class SlowSentencePieceTokenizer(PreTrainedTokenizer):
    """What tokenization_baichuan.py does, under this transformers: sentencepiece encode per piece of text."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, **kwargs):
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)


def folder(model_file, config):
    d = tempfile.mkdtemp(prefix="spref-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    shutil.copy(model_file, os.path.join(d, "tokenizer.model"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return d


def where_different(ref, other):
    return {str(i): o for i, (r, o) in enumerate(zip(ref, other)) if r != o}


def baichuan():
    model_file = os.path.join(SHARED, "baichuan-7b", "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model_file)
    specials = ["<s>", "</s>", "<unk>"]
    special_ids = {sp.piece_to_id(s) for s in specials}
    ids = [chunked_encode(sp, line, specials) for line in CORPUS]

    slow = SlowSentencePieceTokenizer(
        model_file,
        bos_token=transformers.AddedToken("<s>", lstrip=False, rstrip=False, single_word=True, normalized=True),
        eos_token=transformers.AddedToken("</s>", lstrip=False, rstrip=False, single_word=True, normalized=True),
        unk_token=transformers.AddedToken("<unk>", lstrip=False, rstrip=False, single_word=True, normalized=True),
    )
    llama_config = {k: v for k, v in BAICHUAN_CONFIG.items() if k != "auto_map"}
    llama_config["tokenizer_class"] = "LlamaTokenizer"
    fast = AutoTokenizer.from_pretrained(folder(model_file, llama_config))
    return {
        "model": "baichuan-7b",
        "tokenizer_model": "../shared/tokenizers/baichuan-7b/tokenizer.model",
        "tokenizer_config": BAICHUAN_CONFIG,
        "reference": "tokenization_baichuan.py semantics: cut at <s>/</s>/<unk>, sentencepiece.encode each piece",
        "vocab_size": sp.get_piece_size(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "ids": ids,
        "decoded": [chunked_decode(sp, x, special_ids, False) for x in ids],
        "decoded_skip_special": [chunked_decode(sp, x, special_ids, True) for x in ids],
        "differs": {
            "sentencepiece_whole_line": where_different(ids, [sp.encode(line) for line in CORPUS]),
            "transformers_slow": where_different(ids, [slow.encode(line, add_special_tokens=False) for line in CORPUS]),
            "transformers_fast_llama": where_different(ids, [fast.encode(line, add_special_tokens=False) for line in CORPUS]),
        },
    }


def llama(legacy):
    model_file = os.path.join(SHARED, "llama-2", "tokenizer.model")
    with open(os.path.join(SHARED, "llama-2", "tokenizer_config.json")) as f:
        config = json.load(f)
    if legacy:
        config["legacy"] = True
    d = folder(model_file, config)
    from_model = AutoTokenizer.from_pretrained(d)  # merges ranked by piece id
    # The same tokenizer with LlamaConverter's merges (ranked by piece score), as a tokenizer.json that
    # transformers 5.18 reads its vocab and merges from.
    sp = spm.SentencePieceProcessor(model_file=model_file)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    backend = json.loads(from_model.backend_tokenizer.to_str())
    backend["model"]["merges"] = [list(m) for m in generate_merges(vocab, {p: sp.get_score(i) for i, p in enumerate(pieces)})]
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(backend, f, ensure_ascii=False)
    tok = AutoTokenizer.from_pretrained(d)
    ids = [tok.encode(line, add_special_tokens=False) for line in CORPUS]
    return {
        "model": "llama-2-legacy" if legacy else "llama-2",
        "tokenizer_model": "../shared/tokenizers/llama-2/tokenizer.model",
        "tokenizer_config": config,
        "reference": f"transformers {transformers.__version__} AutoTokenizer ({type(tok).__name__}, "
        f"pre_tokenizer {tok.backend_tokenizer.pre_tokenizer}) with merges ranked by piece score (LlamaConverter's)",
        "vocab_size": len(tok),
        "bos_id": tok.bos_token_id,
        "eos_id": tok.eos_token_id,
        "unk_id": tok.unk_token_id,
        "ids": ids,
        "decoded": [tok.decode(x) for x in ids],
        "decoded_skip_special": [tok.decode(x, skip_special_tokens=True) for x in ids],
        "differs": {
            "sentencepiece_whole_line": where_different(ids, [sp.encode(line) for line in CORPUS]),
            "transformers_from_tokenizer_model_only": where_different(ids, [from_model.encode(line, add_special_tokens=False) for line in CORPUS]),
        },
    }


def baichuan_normalizer_changes():
    """Every code point that Baichuan's nmt_nfkc normalizer (with its user-defined symbols) changes."""
    sp = spm.SentencePieceProcessor(model_file=os.path.join(SHARED, "baichuan-7b", "tokenizer.model"))
    changes = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        n = sp.normalize(c)
        if n != "▁" + c.replace(" ", "▁"):
            changes[str(cp)] = n
    return changes


def write(name, obj):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    if not os.path.isdir(SHARED):
        sys.exit(f"no {SHARED}: this script needs ../shared")
    os.makedirs(OUT, exist_ok=True)
    meta = {"transformers": transformers.__version__, "sentencepiece": spm.__version__}
    write("corpus.json", {**meta, "lines": CORPUS})
    for name, obj in [("baichuan-7b.json", baichuan()), ("llama-2.json", llama(False)), ("llama-2-legacy.json", llama(True))]:
        write(name, {**meta, **obj})
        print(name, {k: len(v) for k, v in obj["differs"].items()})
    write("baichuan-7b-normalizer.json", {**meta, "note": "code point -> sentencepiece normalize(chr(cp)) where it is not '▁' + the char", "changes": baichuan_normalizer_changes()})


if __name__ == "__main__":
    main()

// The pretrained stories260K model (../shared/models/stories260K) as a folder loadModel reads. Its hf/
// folder has only a sentencepiece tokenizer.model; when sft cannot read that yet, a temp folder links the
// config and weights and gets a tokenizer.json written from llama2.c's tok512.bin (same pieces and scores):
// a Llama-style BPE with byte fallback, merges ranked by the merged piece's score as sentencepiece merges.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';

export const STORIES_DIR = join(packageRoot, '..', 'shared', 'models', 'stories260K');

/** llama2.c's published greedy sample from BOS (stories260K.md; checked against the engine in test/model). */
export const STORIES_REFERENCE =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

/** A loadable model folder, or a skip message when ../shared is absent. */
export async function storiesModelDir(): Promise<{ dir: string } | { skip: string }> {
  const hf = join(STORIES_DIR, 'hf');
  if (!existsSync(join(hf, 'model.safetensors'))) return { skip: `no ${hf} (../shared absent)` };
  try {
    await loadTokenizer(hf);
    return { dir: hf };
  } catch {
    // No sentencepiece reader in this build: use the llama2.c tokenizer file instead.
  }
  const dir = mkdtempSync(join(tmpdir(), 'sft-stories-'));
  for (const f of ['config.json', 'model.safetensors', 'generation_config.json']) symlinkSync(join(hf, f), join(dir, f));
  copyFileSync(join(hf, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJsonFromTok512(join(STORIES_DIR, 'tok512.bin'), 512)));
  return { dir };
}

/** llama2.c's tokenizer file: int32 max_len, then per token float32 score, int32 len, bytes; its export
 *  wrote "▁" as " " and BOS/EOS as "\n<s>\n" / "\n</s>\n". */
function readTok512(file: string, vocab: number): { piece: string; score: number }[] {
  const b = readFileSync(file);
  const out: { piece: string; score: number }[] = [];
  let off = 4;
  for (let i = 0; i < vocab; i++) {
    const score = b.readFloatLE(off);
    const len = b.readInt32LE(off + 4);
    let piece = b.subarray(off + 8, off + 8 + len).toString('utf8');
    off += 8 + len;
    if (i === 1) piece = '<s>';
    else if (i === 2) piece = '</s>';
    else piece = piece.replaceAll(' ', '▁');
    out.push({ piece, score });
  }
  return out;
}

function tokenizerJsonFromTok512(file: string, vocabSize: number): Record<string, unknown> {
  const pieces = readTok512(file, vocabSize);
  const vocab: Record<string, number> = {};
  pieces.forEach((p, id) => (vocab[p.piece] = id));
  // Every split of a normal piece into two vocab pieces is a merge; a higher-scoring result merges first.
  const merges: { pair: [string, string]; score: number; id: number }[] = [];
  pieces.forEach(({ piece, score }, id) => {
    if (id < 3 || /^<0x[0-9A-F]{2}>$/.test(piece)) return;
    const chars = [...piece];
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      if (left in vocab && right in vocab) merges.push({ pair: [left, right], score, id });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.id - b.id || vocab[a.pair[0]] - vocab[b.pair[0]]);
  const special = (id: number) => ({ id, content: pieces[id].piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0), special(1), special(2)],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => m.pair),
    },
  };
}

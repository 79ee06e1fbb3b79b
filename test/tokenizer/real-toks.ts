// The tokenizers the special-token tests run on: the project's own tiny byte-level BPE (always, as
// `sft init-model` writes it), and the real Qwen2, Llama-2 (tokenizer.json and tokenizer.model alone)
// and Baichuan-7B (tokenizer.model) tokenizers in ../shared/tokenizers, each skipped with a reason
// when absent.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initModel } from '../../src/model/init.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import type { Tok } from '../../src/tokenizer/types.js';

const shared = fileURLToPath(new URL('../../../shared/tokenizers/', import.meta.url));

/** Strings some tokenizer or template treats as one special or marker token. */
export const MARKUP = [
  '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<s>', '</s>', '<unk>', '<pad>',
  '<reserved_102>', '<reserved_103>', '<reserved_106>', '<reserved_107>',
];

export interface NamedTok {
  name: string;
  tok: Tok;
}

export interface TokSet {
  toks: NamedTok[];
  /** Tokenizers left out, with why. */
  skipped: string[];
}

let cached: Promise<TokSet> | undefined;

/** Loads every available tokenizer once per test process. */
export function realToks(): Promise<TokSet> {
  cached ??= load();
  return cached;
}

async function load(): Promise<TokSet> {
  const toks: NamedTok[] = [];
  const skipped: string[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-toks-'));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  for (const arch of ['qwen2', 'llama'] as const) {
    const dir = path.join(tmp, `tiny-${arch}`);
    initModel({ arch, outDir: dir, hidden: 16, layers: 1, heads: 2, intermediate: 32, vocab: 400, seed: 1, maxPosition: 256, force: true });
    toks.push({ name: `tiny ${arch}`, tok: await loadTokenizer(dir) });
  }
  const folder = async (name: string, files: Record<string, string | Buffer>, needs: string): Promise<void> => {
    if (!fs.existsSync(needs)) {
      skipped.push(`${name}: ${needs} is absent`);
      return;
    }
    const dir = path.join(tmp, name.replace(/\W+/g, '-'));
    fs.mkdirSync(dir);
    for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
    toks.push({ name, tok: await loadTokenizer(dir) });
  };
  const read = (p: string) => (fs.existsSync(p) ? fs.readFileSync(p) : '');
  const qwen = path.join(shared, 'qwen2-reconstructed');
  await folder('Qwen2 tokenizer.json', { 'tokenizer.json': read(path.join(qwen, 'tokenizer.json')), 'tokenizer_config.json': read(path.join(qwen, 'tokenizer_config.json')) }, path.join(qwen, 'tokenizer.json'));
  const llama = path.join(shared, 'llama-2');
  await folder('Llama-2 tokenizer.json', { 'tokenizer.json': read(path.join(llama, 'tokenizer.json')), 'tokenizer_config.json': read(path.join(llama, 'tokenizer_config.json')) }, path.join(llama, 'tokenizer.json'));
  await folder('Llama-2 tokenizer.model', { 'tokenizer.model': read(path.join(llama, 'tokenizer.model')) }, path.join(llama, 'tokenizer.model'));
  const baichuan = path.join(shared, 'baichuan-7b', 'tokenizer.model');
  await folder('Baichuan-7B tokenizer.model', { 'tokenizer.model': read(baichuan), 'tokenizer_config.json': JSON.stringify({ tokenizer_class: 'BaichuanTokenizer', eos_token: '</s>', bos_token: '<s>' }) }, baichuan);
  return { toks, skipped };
}

/** Ids of the MARKUP strings this tokenizer has as single tokens: what text must never produce. */
export function markupIds(tok: Tok): Set<number> {
  const ids = new Set<number>();
  for (const s of MARKUP) {
    const id = tok.tokenToId(s);
    if (id !== undefined) ids.add(id);
  }
  return ids;
}

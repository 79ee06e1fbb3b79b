// What the side-by-side benchmark runs: the models (random Llama-shaped weights in the Hugging Face
// layout, made by init-model, read by both engines from the same folder) and the workloads on them.
// Token batches are random ids from a fixed seed, written once and read by both engines, so both
// compute exactly the same thing: every position is a real token and a training target.

export interface ModelShape { id: string; hidden: number; layers: number; heads: number; kvHeads: number; intermediate: number; vocab: number }

export const MODELS: ModelShape[] = [
  { id: '11M', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096 },
  { id: '79M', hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 2048, vocab: 4096 },
];

export type Workload =
  | { kind: 'train'; model: string; batch: number; seq: number; checkpointing: boolean; bf16?: boolean }
  | { kind: 'score'; model: string; seq: number }
  | { kind: 'decode'; model: string; prompt: number; tokens: number };

/** The rows of issue 13's table, in its order. LoRA r 16 (alpha 32, dropout 0.05) on every linear
 *  layer but lm_head; fp32, or bf16 (sft: bf16 weights and activations, fp32 masters and moments;
 *  PyTorch: its CPU autocast to bfloat16 around forward and loss, what HF's Trainer runs for
 *  bf16=True on the CPU); AdamW with clipping at 1.0. */
export const WORKLOADS: Workload[] = [
  { kind: 'train', model: '11M', batch: 8, seq: 128, checkpointing: false },
  { kind: 'train', model: '11M', batch: 2, seq: 512, checkpointing: false },
  { kind: 'train', model: '11M', batch: 1, seq: 1024, checkpointing: false },
  { kind: 'train', model: '11M', batch: 8, seq: 128, checkpointing: true },
  { kind: 'train', model: '79M', batch: 8, seq: 128, checkpointing: false },
  { kind: 'train', model: '11M', batch: 8, seq: 128, checkpointing: false, bf16: true },
  { kind: 'train', model: '11M', batch: 2, seq: 512, checkpointing: false, bf16: true },
  { kind: 'score', model: '11M', seq: 512 },
  { kind: 'decode', model: '11M', prompt: 16, tokens: 128 },
];

export function workloadName(w: Workload): string {
  if (w.kind === 'train') return `LoRA train, ${w.model} Llama, ${w.batch} × ${w.seq}${w.checkpointing ? ', checkpointing' : ''}${w.bf16 ? ', bf16' : ''}`;
  if (w.kind === 'score') return `score ${w.seq} tokens, ${w.model} Llama`;
  return `greedy decode batch 1, ${w.model} Llama (${w.prompt}-token prompt, ${w.tokens} new)`;
}

/** Tokens one measured unit computes: a training step's positions, a scored sequence, the new tokens. */
export function tokensPerUnit(w: Workload): number {
  if (w.kind === 'train') return w.batch * w.seq;
  if (w.kind === 'score') return w.seq;
  return w.tokens;
}

/** The ids a workload reads: [rows, length] row-major, from a fixed seed (xorshift), below `vocab`. */
export function tokenIds(w: Workload, vocab: number, seed = 20261203): Int32Array {
  const rows = w.kind === 'train' ? w.batch : 1;
  const length = w.kind === 'train' || w.kind === 'score' ? w.seq : w.prompt;
  const out = new Int32Array(rows * length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    // Ids 0..10 are the special tokens: leave them out, as text would.
    out[i] = 11 + (s % (vocab - 11));
  }
  return out;
}

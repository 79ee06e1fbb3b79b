// The run's memory plan as people read it: the one-line summary a run prints before its first step,
// and the table `sft train --dry-run` prints (bytes per kind, the largest buffers, what the device
// has free, and whether it fits). The numbers are the engine's own plan (Model.memoryPlan()).
import { freemem, totalmem } from 'node:os';
import type { MemKind, MemoryPlan } from '../native/types.js';
import { native } from '../native/binding.js';

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 2 ** 10).toFixed(1)} KiB`;
}

/** What to lower when a kind does not fit (the engine's out-of-memory message says the same). */
export function adviceFor(kind: MemKind): string {
  switch (kind) {
    case 'weights': return 'use bits 4 (QLoRA) or bf16, or a smaller model';
    case 'trainable':
    case 'gradients':
    case 'optimizer': return 'train fewer parameters (LoRA instead of full fine-tuning, a lower lora_rank) or use adamw_8bit';
    case 'activations':
    case 'workspace': return 'lower per_device_train_batch_size or max_seq_length, or set gradient_checkpointing true';
    case 'kv_cache': return 'use a shorter context';
  }
}

function largest(plan: MemoryPlan) {
  return plan.kinds.reduce((a, b) => (b.bytes > a.bytes ? b : a));
}

/** "Memory plan (cuda bf16): 9.80 GiB — activations 6.10 GiB, weights 2.60 GiB, optimizer 0.80 GiB". */
export function planSummary(plan: MemoryPlan): string {
  const big = plan.kinds.filter((k) => k.bytes > 0).sort((a, b) => b.bytes - a.bytes).slice(0, 3);
  return `Memory plan (${plan.device} ${plan.dtype}): ${formatBytes(plan.total)} — ${big.map((k) => `${k.kind} ${formatBytes(k.bytes)}`).join(', ')}`;
}

/** Free and total bytes of the device, when known (a cuda plan made without a usable GPU: none). */
export function deviceMemory(device: 'cpu' | 'cuda'): { free: number; total: number; name: string } | undefined {
  if (device === 'cpu') return { free: freemem(), total: totalmem(), name: 'host memory' };
  const b = native().backends();
  if (!b.cudaDevices || b.cudaFreeBytes === undefined) return undefined;
  return { free: b.cudaFreeBytes, total: b.cudaTotalBytes ?? b.cudaFreeBytes, name: b.cudaName ?? 'GPU' };
}

// Room left for what the plan does not hold: the CUDA context, the allocator's slack, the kernels'
// temporaries; on the CPU, the tokenizer, the data and Node itself.
const HEADROOM = 0.9;

/** The dry run's table, one line per kind (with its largest buffers), the total, and the verdict. */
export function planTable(plan: MemoryPlan): string[] {
  const lines = [`Memory plan (${plan.device} ${plan.dtype}), before any weight is loaded:`];
  for (const k of plan.kinds) {
    if (!k.bytes) continue;
    const top = k.entries.slice(0, 2).map((e) => `${e.name} ${formatBytes(e.bytes)}`).join(', ');
    const more = k.count > 2 ? `, … (${k.count} buffers)` : '';
    lines.push(`  ${k.kind.padEnd(12)} ${formatBytes(k.bytes).padStart(11)}   ${top}${more}`);
  }
  lines.push(`  ${'total'.padEnd(12)} ${formatBytes(plan.total).padStart(11)}`);
  const mem = deviceMemory(plan.device);
  if (!mem) {
    lines.push(`  available: unknown — no usable CUDA device here (the plan is what a GPU would need)`);
    lines.push(`fits: unknown (needs ${formatBytes(plan.total)} of GPU memory)`);
    return lines;
  }
  lines.push(`  available    ${formatBytes(mem.free).padStart(11)}   free of ${formatBytes(mem.total)} (${mem.name})`);
  if (plan.total <= HEADROOM * mem.free) {
    lines.push(`fits: yes (${formatBytes(plan.total)} of ${formatBytes(mem.free)} free)`);
  } else {
    const big = largest(plan);
    lines.push(`fits: NO — ${formatBytes(plan.total)} needed, ${formatBytes(mem.free)} free; largest kind ${big.kind} ${formatBytes(big.bytes)}: ${adviceFor(big.kind)}`);
  }
  return lines;
}

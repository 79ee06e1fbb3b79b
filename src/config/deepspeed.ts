// The `deepspeed` key (HF TrainingArguments): a DeepSpeed config, as a path to its JSON file, the
// JSON text itself, or an object. sft reads one thing from it, zero_optimization.stage, which sets
// zero_stage (ZeRO-1 optimizer-state sharding on a data-parallel run; docs/SCALING.md); the rest of
// a DeepSpeed config (batch sizes, precision, optimizer, offload) is DeepSpeed's own plumbing and
// sft's keys decide those. A path is relative to the working directory, as HF reads it.
import { readFileSync } from 'node:fs';
import { JsonSyntaxError, parseJsonObject } from './json.js';

export interface DeepSpeedStage {
  /** zero_optimization.stage (0 when the config has no zero_optimization). */
  stage: number;
  /** How the config is named in messages: the file, or "the deepspeed object". */
  source: string;
  /** The DeepSpeed keys present besides zero_optimization.stage (they have no effect). */
  others: string[];
}

/** The ZeRO stage a deepspeed value asks for, or an error naming the file and key. */
export function readDeepSpeed(value: string | Record<string, unknown>): DeepSpeedStage | { error: string } {
  let obj: Record<string, unknown>;
  let source: string;
  if (typeof value === 'object') {
    obj = value;
    source = 'the deepspeed object';
  } else if (value.trim().startsWith('{')) {
    source = 'the deepspeed JSON text';
    try {
      obj = parseJsonObject(value).value as Record<string, unknown>;
    } catch (err) {
      return { error: `deepspeed: ${source} is not a JSON object (${(err as Error).message})` };
    }
  } else {
    source = value;
    let text: string;
    try {
      text = readFileSync(value, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder, not a JSON file' : (err as Error).message;
      return { error: `deepspeed: cannot read the DeepSpeed config ${value} (${why}); give a path relative to the working directory, or the config as an object` };
    }
    try {
      obj = parseJsonObject(text).value as Record<string, unknown>;
    } catch (err) {
      if (err instanceof JsonSyntaxError) return { error: `deepspeed: ${value}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'invalid JSON: ' : ''}${err.message}` };
      return { error: `deepspeed: ${value}: ${(err as Error).message}` };
    }
  }
  const others = Object.keys(obj).filter((k) => k !== 'zero_optimization');
  const zero = obj.zero_optimization;
  if (zero === undefined || zero === null) return { stage: 0, source, others };
  if (typeof zero !== 'object' || Array.isArray(zero)) {
    return { error: `deepspeed: ${source}: zero_optimization = ${JSON.stringify(zero)} is not allowed; expected an object such as {"stage": 1}` };
  }
  const z = zero as Record<string, unknown>;
  others.push(...Object.keys(z).filter((k) => k !== 'stage').map((k) => `zero_optimization.${k}`));
  const stage = z.stage ?? 0;
  if (typeof stage !== 'number' || ![0, 1, 2, 3].includes(stage)) {
    return { error: `deepspeed: ${source}: zero_optimization.stage = ${JSON.stringify(stage)} is not allowed; expected 0, 1, 2 or 3` };
  }
  return { stage, source, others };
}

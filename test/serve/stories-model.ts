// The pretrained stories260K model (../shared/models/stories260K): its hf/ folder (config.json,
// model.safetensors, a sentencepiece tokenizer.model) loads as users' folders do.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

export const STORIES_DIR = join(packageRoot, '..', 'shared', 'models', 'stories260K');

/** llama2.c's published greedy sample from BOS (stories260K.md; checked against the engine in test/model). */
export const STORIES_REFERENCE =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

/** The model folder, or a skip message when ../shared is absent. */
export async function storiesModelDir(): Promise<{ dir: string } | { skip: string }> {
  const hf = join(STORIES_DIR, 'hf');
  if (!existsSync(join(hf, 'model.safetensors'))) return { skip: `no ${hf} (../shared absent)` };
  return { dir: hf };
}

// The only module that loads the compiled addon (build/Release/sft_native.node).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from './types.js';
import { SftError } from '../errors.js';

let cached: NativeAddon | undefined;

/** Repository root: two levels above this file in both src/native and dist/native. */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function native(): NativeAddon {
  if (cached) return cached;
  const file = join(packageRoot, 'build', 'Release', 'sft_native.node');
  if (!existsSync(file)) {
    throw new SftError(`the native engine is not built (${file} is missing) — run "npm install" (or "npm run build:native")`);
  }
  const require = createRequire(import.meta.url);
  cached = require(file) as NativeAddon;
  return cached;
}

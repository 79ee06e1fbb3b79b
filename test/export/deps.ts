// The two outside readers the GGUF tests check sft's files with, found in side folders (never product
// dependencies): gguf-py (llama.cpp's Python package, with numpy and safetensors) and llama.cpp itself
// through node-llama-cpp's CPU binaries. .ci/run installs both into .test-deps/; SFT_TEST_PYTHON (a
// Python that imports gguf) and SFT_TEST_LLAMA (a folder whose node_modules holds node-llama-cpp)
// point elsewhere. Without them the tests that need them skip, saying why.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { packageRoot } from '../../src/native/binding.js';

export const TEST_DEPS = join(packageRoot, '.test-deps');
export const LLAMA_VERSION = '3.22.1';

export function ggufPython(): { python: string } | { skip: string } {
  const python = process.env.SFT_TEST_PYTHON ?? join(TEST_DEPS, 'venv', 'bin', 'python');
  if (!process.env.SFT_TEST_PYTHON && !existsSync(python)) return { skip: `no gguf-py: set SFT_TEST_PYTHON or run .ci/run's setup (${python} missing)` };
  const r = spawnSync(python, ['-c', 'import gguf, numpy, safetensors'], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `${python} cannot import gguf, numpy and safetensors (pip install gguf numpy safetensors)` };
  return { python };
}

export function llamaCpp(): { dir: string } | { skip: string } {
  const dir = process.env.SFT_TEST_LLAMA ?? join(TEST_DEPS, 'llama');
  if (!existsSync(join(dir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js'))) {
    return { skip: `no node-llama-cpp in ${dir}/node_modules: set SFT_TEST_LLAMA, or npm install --prefix ${dir} node-llama-cpp@${LLAMA_VERSION} @node-llama-cpp/${process.platform}-${process.arch}@${LLAMA_VERSION}` };
  }
  return { dir };
}

export interface LlamaFileJob { gguf: string; prompt: number[]; tokens: number; text: number[]; tokenize?: string }
export interface LlamaFileResult { gguf: string; greedy?: number[]; nll?: number; tokenized?: number[]; error?: string }

/** Runs the files in llama.cpp in one child process (llama-run.mjs). */
export function runLlama(dir: string, files: LlamaFileJob[]): LlamaFileResult[] {
  const r = spawnSync(process.execPath, [join(packageRoot, 'test', 'export', 'llama-run.mjs'), JSON.stringify({ llamaDir: dir, files })], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`llama-run.mjs failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as LlamaFileResult[];
}

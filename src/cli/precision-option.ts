// The precision flags every inference command shares (chat, score, eval, serve): the compute type of
// the engine and whether the base is held in 4 bits. transformers spells them torch_dtype and
// load_in_4bit; Firefly's chat script has the same load_in_4bit switch.
import type { Argv } from 'yargs';
import type { LoadOptions } from '../model/load.js';

export type DtypeFlag = 'f32' | 'bf16';

export interface PrecisionArgs {
  dtype: DtypeFlag;
  'load-in-4bit'?: boolean;
}

export function withPrecision<T>(y: Argv<T>): Argv<T & PrecisionArgs> {
  return y
    .option('dtype', {
      choices: ['f32', 'bf16'] as const,
      default: 'f32' as const,
      describe: 'Compute type: f32, or bf16 (half the memory of weights and cache; bf16 kernels where the CPU or GPU has them)',
    })
    .option('load-in-4bit', {
      type: 'boolean',
      describe: "Hold the base in NF4 (QLoRA's 4 bits, double quantization): ~1/7 of fp32's memory. Default: what the adapter was trained on",
    }) as unknown as Argv<T & PrecisionArgs>;
}

/** The loadModel options the flags mean: --no-load-in-4bit keeps a QLoRA adapter's base in 16/32 bits. */
export function precisionOptions(a: PrecisionArgs): Pick<LoadOptions, 'dtype' | 'bits'> {
  const bits = a['load-in-4bit'] === undefined ? undefined : a['load-in-4bit'] ? 4 : 16;
  return { dtype: a.dtype, bits };
}

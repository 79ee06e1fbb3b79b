// `sft export --format gguf --model DIR [--adapter DIR] --out FILE [--type f32|f16|q8_0|q4_k_m]`:
// the model (a LoRA adapter merged in, as `sft merge` does) as one GGUF file for llama.cpp, with its
// tokenizer and chat template in the file's metadata (src/export/gguf.ts).
import type { Argv, CommandModule } from 'yargs';
import { existsSync, statSync } from 'node:fs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { SftError } from '../../errors.js';

interface ExportArgs {
  device: DeviceFlag;
  format: string;
  model: string;
  adapter?: string;
  out: string;
  type: string;
  force: boolean;
  'dequantized-base': boolean;
}

const command: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Write the model (with a LoRA adapter merged in) as a GGUF file for llama.cpp',
  builder: (y: Argv<object>): Argv<ExportArgs> =>
    withDevice(y)
      .option('format', { type: 'string', default: 'gguf', describe: 'Output format (gguf)' })
      .option('model', { type: 'string', demandOption: true, describe: 'Base HF model folder' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to merge in first' })
      .option('out', { type: 'string', demandOption: true, describe: 'GGUF file to write' })
      .option('type', { type: 'string', default: 'f16', describe: 'Tensor types: f32, f16, q8_0 or q4_k_m (llama-quantize\'s Q4_K_M mix)' })
      .option('force', { type: 'boolean', default: false, describe: 'Replace an existing --out file' })
      .option('dequantized-base', { type: 'boolean', default: false, describe: 'QLoRA adapter: merge into the dequantized NF4 base it was trained on' }),
  handler: async (argv) => {
    if (argv.format !== 'gguf') throw new SftError(`--format ${argv.format}: sft exports gguf only`);
    const { exportGguf, parseFileType } = await import('../../export/gguf.js');
    parseFileType(argv.type);
    if (existsSync(argv.out)) {
      if (statSync(argv.out).isDirectory()) throw new SftError(`--out ${argv.out} is a folder; name the .gguf file to write`);
      if (!argv.force) throw new SftError(`--out ${argv.out} exists; choose another file or pass --force to replace it`);
    }
    const say = (l: string) => process.stdout.write(l + '\n');
    const t0 = Date.now();
    const r = await exportGguf({
      modelDir: argv.model, adapterDir: argv.adapter, out: argv.out, type: argv.type,
      device: await deviceFromFlag(argv.device), dequantizedBase: argv['dequantized-base'], say,
      // On a terminal, one line rewritten per tensor.
      progress: process.stderr.isTTY ? (i, n, name) => process.stderr.write(`\r\x1b[K  tensor ${i}/${n} ${name}${i === n ? '\n' : ''}`) : undefined,
    });
    const counts = new Map<string, number>();
    for (const t of r.tensors) counts.set(t.type, (counts.get(t.type) ?? 0) + 1);
    const mix = [...counts].map(([t, n]) => `${n} ${t}`).join(', ');
    say(`Wrote ${argv.out}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.tensors.length} tensors (${mix}), ${argv.type.toLowerCase()}${argv.adapter ? `, ${argv.adapter} merged in` : ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  },
};

export default command;

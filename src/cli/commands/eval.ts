// `sft eval`: few-shot multiple-choice accuracy on C-Eval, CMMLU or MMLU, read from the datasets'
// own folders, with the prompts of each benchmark's evaluation code; prints the table and writes it
// as JSON and Markdown (plus C-Eval's submission file for --split test).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { precisionOptions, withPrecision, type PrecisionArgs } from '../precision-option.js';
import { SftError } from '../../errors.js';
import { BENCHMARKS, type BenchmarkName } from '../../eval/datasets.js';
import { TEMPLATE_NAMES } from '../../data/templates.js';

interface EvalArgs extends PrecisionArgs {
  device: DeviceFlag;
  ceval?: string;
  cmmlu?: string;
  mmlu?: string;
  model: string;
  adapter?: string;
  shots: number;
  split?: string;
  subjects?: string;
  'batch-size': number;
  'max-context'?: number;
  template?: string;
  bos?: boolean;
  out?: string;
}

const evalCommand: CommandModule<object, EvalArgs> = {
  command: 'eval',
  describe: 'Few-shot accuracy on C-Eval, CMMLU or MMLU (the datasets\' own files and prompt formats)',
  builder: (y: Argv<object>): Argv<EvalArgs> =>
    withPrecision(withDevice(y))
      .option('ceval', { type: 'string', describe: 'C-Eval data folder (dev/, val/, test/ of {subject}_{split}.csv)' })
      .option('cmmlu', { type: 'string', describe: 'CMMLU data folder (dev/, test/ of {subject}.csv)' })
      .option('mmlu', { type: 'string', describe: 'MMLU data folder (dev/, val/, test/ of {subject}_{split}.csv)' })
      .option('model', { type: 'string', demandOption: true, describe: 'HF model folder' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to apply' })
      .option('shots', { type: 'number', default: 5, describe: 'Dev examples before each question (0-5); fewer where the prompt would not fit --max-context (the report counts them)' })
      .option('split', { type: 'string', describe: 'Split to score: C-Eval val (default) or test; CMMLU test; MMLU test (default) or val' })
      .option('subjects', { type: 'string', describe: 'Comma-separated subject handles, e.g. computer_network,law (default: all)' })
      .option('batch-size', { type: 'number', default: 1, describe: "Prompts per forward pass; 1 (default) scores on the KV cache, computing each subject's few-shot prefix once" })
      .option('max-context', { type: 'number', describe: "Longest prompt in tokens (default: the model's max_position_embeddings)" })
      .option('template', { type: 'string', choices: TEMPLATE_NAMES, describe: 'Chat-mode prompts: shots as user/assistant turns of this template (C-Eval\'s prompt for chat models)' })
      .option('bos', { type: 'boolean', describe: "Start prompts with BOS (default: the tokenizer config's add_bos_token)" })
      .option('out', { type: 'string', describe: 'Report file (default: <benchmark>-<split>.json); the .md table is written beside it' })
      .check((a) => {
        const given = (['ceval', 'cmmlu', 'mmlu'] as const).filter((k) => a[k] !== undefined);
        if (given.length !== 1) throw new SftError(`name one dataset folder: --ceval DIR, --cmmlu DIR or --mmlu DIR${given.length ? ` (got ${given.map((g) => '--' + g).join(' and ')})` : ''}`);
        return true;
      }),
  handler: async (argv) => {
    const benchmark = (['ceval', 'cmmlu', 'mmlu'] as const).find((k) => argv[k] !== undefined) as BenchmarkName;
    const dir = argv[benchmark]!;
    const split = argv.split ?? BENCHMARKS[benchmark].splits[0];
    const subjects = argv.subjects?.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const { planEval, runEval, writeReport, tokenizerAddsBos, contextOf } = await import('../../eval/run.js');
    const { renderTable } = await import('../../eval/report.js');
    // The data and options are checked before the model is loaded (which takes a while on big ones).
    const plan = planEval({ benchmark, dir, split, subjects, shots: argv.shots, template: argv.template, batchSize: argv.batchSize });
    // Loaded on use: the engine (native addon) stays out of `sft --help`.
    const { loadModel } = await import('../../model/load.js');
    const loaded = await loadModel({ modelDir: argv.model, adapterDir: argv.adapter, device: await deviceFromFlag(argv.device), ...precisionOptions(argv) });
    const tokDir = argv.adapter && existsSync(join(argv.adapter, 'tokenizer.json')) ? argv.adapter : argv.model;
    const report = await runEval(plan, {
      model: loaded.model,
      tok: loaded.tok,
      vocabSize: loaded.native.vocabSize,
      maxContext: argv.maxContext ?? contextOf(loaded.hf, argv.model),
      bos: argv.bos ?? tokenizerAddsBos(tokDir),
      modelDir: argv.model,
      adapterDir: argv.adapter,
    });
    process.stdout.write('\n' + renderTable(report));
    const files = writeReport(report, argv.out ?? `${benchmark}-${split}.json`);
    process.stdout.write(`\nWrote ${[files.json, files.markdown, files.submission].filter(Boolean).join(', ')}\n`);
  },
};

export default evalCommand;

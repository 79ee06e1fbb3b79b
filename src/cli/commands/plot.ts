// `sft plot RUN_DIR [RUN_DIR...]`: loss (or learning rate, or grad norm) against step from each run's
// metrics.jsonl, in one SVG, to compare runs. Training writes <output_dir>/loss.svg by itself.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { PLOT_METRICS, plotSvg, readRun, type PlotMetric } from '../../log/plot.js';

interface PlotArgs {
  runs: string[];
  out?: string;
  metric: PlotMetric;
  log: boolean;
}

const plot: CommandModule<object, PlotArgs> = {
  command: 'plot <runs..>',
  describe: "Draw loss and learning rate against step from runs' metrics.jsonl into an SVG",
  builder: (y: Argv<object>): Argv<PlotArgs> =>
    y
      .positional('runs', { type: 'string', array: true, demandOption: true, describe: 'output_dir of each run (or its metrics.jsonl)' })
      .option('out', { type: 'string', describe: 'SVG to write (default: RUN_DIR/<metric>.svg for one run, compare-<metric>.svg for several)' })
      .option('metric', { choices: PLOT_METRICS, default: 'loss' as PlotMetric, describe: 'what the top panel shows' })
      .option('log', { type: 'boolean', default: false, describe: 'log scale for the top panel' })
      .example('$0 plot output/run-a output/run-b --out compare.svg', 'both runs, loss and learning rate') as unknown as Argv<PlotArgs>,
  handler: (argv) => {
    const runs = argv.runs.map(readRun);
    // Two runs in folders of the same name are told apart by the path given.
    const names = runs.map((r) => r.name);
    runs.forEach((r, i) => {
      if (names.indexOf(r.name) !== names.lastIndexOf(r.name)) r.name = argv.runs[i];
    });
    for (const r of runs) if (r.skipped) process.stderr.write(`sft plot: ${r.name}: ${r.skipped} line${r.skipped > 1 ? 's' : ''} of metrics.jsonl skipped (not a JSON object)\n`);
    const out = argv.out ?? (runs.length === 1 ? join(runs[0].dir, `${argv.metric}.svg`) : `compare-${argv.metric}.svg`);
    writeFileSync(out, plotSvg(runs, { metric: argv.metric, logScale: argv.log }));
    process.stdout.write(`wrote ${out}\n`);
  },
};
export default plot;

// Where a training run's numbers go, in one object the recipe opens, logs to and closes:
//   <output_dir>/metrics.jsonl   always (sft's own record; see metrics.ts)
//   TensorBoard event files      report_to has "tensorboard" or "all": logging_dir, else HF's
//                                default <output_dir>/runs/<date>_<host>
//   wandb                        report_to has "wandb" or "all", and WANDB_API_KEY is set
//   <output_dir>/loss.svg        at close(), from metrics.jsonl
// Tags are HF's (transformers' rewrite_logs): "loss" -> "train/loss", "eval_loss" -> "eval/loss",
// so sft runs sit beside HF Trainer runs in TensorBoard and wandb. A tracker that fails is a
// warning; only metrics.jsonl errors stop training.
import type { TrainConfig } from '../config/schema.js';
import { MetricsWriter, type MetricsRecord } from './metrics.js';
import { TensorBoardWriter, defaultLoggingDir } from './tensorboard.js';
import { WandbLogger, type WandbOptions } from './wandb.js';
import { writeLossPlot } from './plot.js';

export type ReportersConfig = Pick<TrainConfig, 'report_to' | 'logging_dir'> & Partial<Pick<TrainConfig, 'run_name'>>;

export interface ReportersOptions {
  /** A resumed run: append to metrics.jsonl instead of starting it afresh (TensorBoard gets a new
   *  event file, wandb a new run, as HF does unless told to resume them). */
  append?: boolean;
  /** Passed to wandb (tests inject a fake client, an environment, a short timeout). */
  wandb?: Omit<WandbOptions, 'print'>;
}

/** HF's rewrite_logs: eval_x -> eval/x, test_x -> test/x, anything else -> train/x. Only finite
 *  numbers are kept (a diverged loss is null in metrics.jsonl and absent here); "step" is the x axis. */
export function hfTags(record: Record<string, unknown>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(record)) {
    if (k === 'step' || typeof v !== 'number' || !Number.isFinite(v)) continue;
    const tag = k.startsWith('eval_') ? `eval/${k.slice(5)}` : k.startsWith('test_') ? `test/${k.slice(5)}` : `train/${k}`;
    out[tag] = v;
  }
  return out;
}

export class Reporters {
  private closed = false;

  private constructor(
    private readonly outputDir: string,
    private readonly print: (line: string) => void,
    private readonly metrics: MetricsWriter,
    private tensorboard: TensorBoardWriter | undefined,
    private readonly wandb: WandbLogger | undefined,
  ) {}

  /** Opens every reporter `cfg.report_to` asks for. `config` is what wandb records as the run's
   *  config (default: cfg itself). */
  static async open(cfg: ReportersConfig, outputDir: string, print: (line: string) => void, opts: ReportersOptions = {}, config: object = cfg): Promise<Reporters> {
    const wants = (name: string) => cfg.report_to.includes(name) || cfg.report_to.includes('all');
    const metrics = new MetricsWriter(outputDir, 'metrics.jsonl', opts.append ?? false);
    let tb: TensorBoardWriter | undefined;
    if (wants('tensorboard')) {
      const dir = cfg.logging_dir ?? defaultLoggingDir(outputDir);
      try {
        tb = new TensorBoardWriter(dir);
        print(`TensorBoard: writing to ${dir} (view: tensorboard --logdir ${cfg.logging_dir ?? `${outputDir}/runs`})`);
      } catch (err) {
        print(`TensorBoard: warning: cannot create an event file in ${dir} (${(err as Error).message}); TensorBoard logging is off for this run`);
      }
    }
    const wandb = await WandbLogger.open({ report_to: cfg.report_to, output_dir: outputDir, run_name: cfg.run_name }, { ...config }, { ...opts.wandb, print });
    return new Reporters(outputDir, print, metrics, tb, wandb);
  }

  /** One logging step: a line of metrics.jsonl (written through at once), then the trackers. */
  log(step: number, record: MetricsRecord): void {
    this.metrics.write(record);
    this.track(step, record);
  }

  /** The end-of-training numbers (train_runtime, train_loss, total_flos, ...) to the trackers, as HF
   *  logs them at the end (train/train_runtime, ...); train_results.json keeps them on disk. */
  summary(step: number, metrics: Record<string, number>): void {
    this.track(step, metrics);
  }

  /** Closes the trackers, then draws <output_dir>/loss.svg. Never throws for a tracker or the plot;
   *  a second call does nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.metrics.close();
    try {
      this.tensorboard?.close();
    } catch (err) {
      this.tensorboardFailed(err);
    }
    this.tensorboard = undefined;
    await this.wandb?.close();
    try {
      const svg = writeLossPlot(this.outputDir);
      if (svg) this.print(`Loss plot: ${svg} (compare runs: sft plot RUN_DIR RUN_DIR ...)`);
    } catch (err) {
      this.print(`warning: could not draw the loss plot (${(err as Error).message})`);
    }
  }

  private track(step: number, values: Record<string, unknown>): void {
    if (this.closed) return;
    const tags = hfTags(values);
    if (this.tensorboard) {
      try {
        for (const [tag, v] of Object.entries(tags)) this.tensorboard.scalar(tag, v, step);
        this.tensorboard.flush();
      } catch (err) {
        this.tensorboardFailed(err);
      }
    }
    this.wandb?.log({ ...tags, 'train/global_step': step }, step);
  }

  private tensorboardFailed(err: unknown): void {
    this.print(`TensorBoard: warning: cannot write ${this.tensorboard?.path} (${(err as Error).message}); TensorBoard logging is off for the rest of this run`);
    this.tensorboard = undefined;
  }
}

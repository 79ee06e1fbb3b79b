// output_dir before a run writes into it: never the base model's folder, never silently over
// another run. --overwrite_output_dir moves the earlier run aside (output_dir.replaced-<time>)
// rather than mixing the two runs: otherwise checkpoint rotation would delete the new run's
// checkpoints (the old run's step numbers sort higher) and `--resume latest` would pick the old run.
import { existsSync, lstatSync, readdirSync, realpathSync, renameSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { TrainConfig } from '../config/schema.js';
import { SftError } from '../errors.js';

/** Names that say output_dir holds an earlier run's results. */
const RUN_FILE = /^(checkpoint-\d+|adapter_model\.safetensors|adapter_config\.json|model\.safetensors|model\.safetensors\.index\.json|pytorch_model\.bin|metrics\.jsonl|train_results\.json|sft_config\.json|sft_manifest\.json)$/;
/** Files a run writes into output_dir in place (appended or replaced by name): none may be a link. */
const WRITTEN_IN_PLACE = ['metrics.jsonl', 'train_results.json', 'loss.svg'];

export function prepareOutputDir(cfg: TrainConfig, resuming: boolean, print: (l: string) => void): void {
  const out = resolve(cfg.output_dir);
  refuseModelFolder(cfg, out);
  if (!existsSync(out)) return;
  for (const f of WRITTEN_IN_PLACE) {
    const p = join(out, f);
    if (isLink(p)) throw new SftError(`${p} is a symbolic link: sft does not write through links in output_dir (it could overwrite a file elsewhere); remove the link and run again`);
  }
  if (resuming) return;
  const earlier = readdirSync(out).filter((d) => RUN_FILE.test(d));
  if (!earlier.length) return;
  if (!cfg.overwrite_output_dir) {
    throw new SftError(`output_dir ${cfg.output_dir} already holds a previous run (${earlier.slice(0, 3).join(', ')}); choose another output_dir, resume it with --resume latest, or pass --overwrite_output_dir to move it aside and start over`);
  }
  if (inside(resolve(cfg.train_file), out)) {
    throw new SftError(`--overwrite_output_dir would move the previous run in ${cfg.output_dir} aside, and train_file ${cfg.train_file} with it; keep the data outside output_dir`);
  }
  const aside = `${out}.replaced-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '')}`;
  try {
    renameSync(out, aside);
  } catch (err) {
    throw new SftError(`--overwrite_output_dir: could not move the previous run in ${cfg.output_dir} aside to ${aside} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); remove it yourself or choose another output_dir`);
  }
  print(`--overwrite_output_dir: the previous run in ${cfg.output_dir} was moved to ${aside} (delete it when you no longer need it)`);
}

/** Training into the base model's folder would replace its weights (full fine-tuning writes
 *  model.safetensors; next to a .bin-only model it would be preferred by the loader). */
function refuseModelFolder(cfg: TrainConfig, out: string): void {
  if (!existsSync(cfg.model_name_or_path)) return;
  const model = realpathSync(cfg.model_name_or_path);
  const target = existsSync(out) ? realpathSync(out) : join(realpathSync(nearestExisting(out)), relative(nearestExisting(out), out));
  if (target === model || inside(model, target)) {
    throw new SftError(`output_dir ${cfg.output_dir} ${target === model ? 'is' : 'holds'} the model folder ${cfg.model_name_or_path}: the run would write over the base model; choose another output_dir`);
  }
}

function nearestExisting(p: string): string {
  let d = p;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** `p` lies strictly inside folder `dir`. */
export function inside(p: string, dir: string): boolean {
  const r = relative(dir, p);
  return r !== '' && r !== '..' && !r.startsWith(`..${sep}`) && !isAbsolute(r);
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

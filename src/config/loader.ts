// Reads a Firefly-style train_args JSON file, applies command-line overrides the way HF's
// HfArgumentParser reads them, checks every key against the schema and reports what this build
// will not do. Relative paths in the config stay as written: they are relative to the working
// directory, as in Firefly.
import { readFileSync } from 'node:fs';
import { SftError } from '../errors.js';
import { JsonSyntaxError, parseJsonObject } from './json.js';
import { BAD, KEYS, REQUIRED, SCHEMA, isKey, resolveBetweenKeys, sameValue } from './schema.js';
import type { Check, TrainConfig } from './schema.js';
import { OTHER_KEYS, OTHER_KEY_NAMES, isOtherKey, whyText, type Why } from './hf-keys.js';
import { didYouMean } from './suggest.js';

/** Every key a config may hold: the schema's, then the HF/Firefly keys sft does not keep. */
const ALL_KEYS: readonly string[] = [...KEYS, ...OTHER_KEY_NAMES];
const known = (k: string) => isKey(k) || isOtherKey(k);
const unknownKey = (where: string, key: string, prefix = '', what = 'key') =>
  `${where}unknown ${what} "${prefix}${key}"${didYouMean(key, ALL_KEYS, prefix) || '; configs/README.md lists the accepted keys'}`;

/** All unknown keys in one error: a user with three typos fixes them in one go. */
function throwUnknown(lines: string[]): void {
  if (lines.length) throw new SftError(lines.join('\n'));
}

export interface LoadedConfig {
  config: TrainConfig;
  /** What this build does differently from what the config asks; print them before training. */
  notices: string[];
}

/**
 * Loads `path` and applies `overrides`, command-line tokens such as
 * ['--learning_rate', '1e-4', '--fp16', '--lora_target_modules', 'q_proj,v_proj'].
 * Throws SftError naming the file, line and key for anything it cannot accept.
 */
export function loadConfig(path: string, overrides: string[] = []): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder, not a JSON file' : (err as Error).message;
    throw new SftError(`${path}: cannot read the config (${why})`);
  }
  let parsed;
  try {
    parsed = parseJsonObject(text);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new SftError(`${path}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'invalid JSON: ' : ''}${err.message}`);
    throw err;
  }
  const values: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [key, raw] of Object.entries(parsed.value)) {
    const at = parsed.where.get(key)!;
    if (!known(key)) unknown.push(unknownKey(`${path}:${at.key.line}:${at.key.col}: `, key));
    else values[key] = checked(checkOf(key), raw, `${path}:${at.value.line}:${at.value.col}: ${key}`);
  }
  throwUnknown(unknown);
  return complete({ ...values, ...parseOverrides(overrides) }, path);
}

/** The same checks as loadConfig, for a config held in memory (tests, other commands). */
export function configFromObject(obj: Record<string, unknown>, overrides: string[] = [], source = 'config'): LoadedConfig {
  const values: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [key, raw] of Object.entries(obj)) {
    if (!known(key)) unknown.push(unknownKey(`${source}: `, key));
    else values[key] = checked(checkOf(key), raw, `${source}: ${key}`);
  }
  throwUnknown(unknown);
  return complete({ ...values, ...parseOverrides(overrides) }, source);
}

/**
 * Command-line overrides, read as HfArgumentParser reads them: `--key value` or `--key=value`;
 * `--some-key` means `--some_key`; a bool alone means true and takes yes/no, true/false, t/f,
 * y/n, 1/0; `--no_<key>` sets a bool whose default is true to false; lists take several words
 * and/or commas (`--report_to wandb tensorboard`, `--lora_target_modules q_proj,v_proj`);
 * a later token wins over an earlier one. Values are checked like the file's.
 */
export function parseOverrides(tokens: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (!token.startsWith('--') || token === '--') {
      throw new SftError(`command line: unexpected argument "${token}"; overrides are written --key value or --key=value`);
    }
    const eq = token.indexOf('=');
    const name = (eq >= 0 ? token.slice(2, eq) : token.slice(2)).replace(/-/g, '_');
    const inline = eq >= 0 ? token.slice(eq + 1) : undefined;
    const takesValue = (t: string | undefined): t is string => t !== undefined && !t.startsWith('--');

    // HF adds --no_<key> for bools whose default is true.
    const negated = name.startsWith('no_') ? name.slice(3) : '';
    if (!known(name) && known(negated) && checkOf(negated).text === 'bool' && defaultOf(negated) === true) {
      if (inline !== undefined) throw new SftError(`command line: --no_${negated} takes no value`);
      out[negated] = false;
      continue;
    }
    if (!known(name)) {
      unknown.push(unknownKey('command line: ', name, '--', 'option'));
      // Skip its value words, so that they are not read as options of their own.
      if (inline === undefined) while (takesValue(tokens[i + 1])) i++;
      continue;
    }
    const check = checkOf(name);
    let raw: unknown;
    if (check.text === 'bool') {
      const word = inline ?? (takesValue(tokens[i + 1]) ? tokens[++i] : 'true');
      raw = toBool(word);
    } else if (check.text === 'list') {
      const words: string[] = [];
      if (inline !== undefined) words.push(inline);
      else while (takesValue(tokens[i + 1])) words.push(tokens[++i]);
      if (words.length === 0) throw new SftError(`command line: --${name} needs a value (${check.allowed})`);
      raw = words.flatMap((w) => w.split(','));
    } else {
      if (inline === undefined && !takesValue(tokens[i + 1])) throw new SftError(`command line: --${name} needs a value (${check.allowed})`);
      const word = inline ?? tokens[++i];
      raw = check.nullable && /^(null|none)$/i.test(word) ? null : check.text === 'number' ? toNumber(word) : word;
      // 1e400, Infinity and NaN parse to numbers JSON cannot show (checked() would print "null"):
      // say what was typed.
      const nonFinite = typeof raw === 'number' ? !Number.isFinite(raw) : check.text === 'number' && /^\s*[-+]?nan\s*$/i.test(word);
      if (nonFinite) {
        throw new SftError(`command line: --${name} ${word}: not a finite number; expected ${check.allowed}`);
      }
    }
    out[name] = checked(check, raw, `command line: --${name}`);
  }
  throwUnknown(unknown);
  return out;
}

const checkOf = (k: string): Check<unknown> => (isKey(k) ? SCHEMA[k].check : OTHER_KEYS[k].check) as Check<unknown>;
const defaultOf = (k: string): unknown => (isKey(k) ? SCHEMA[k].default : OTHER_KEYS[k].defaults[0]);

// HfArgumentParser's string_to_bool; anything else stays a string and fails the check.
function toBool(word: string): boolean | string {
  const w = word.toLowerCase();
  if (['yes', 'true', 't', 'y', '1'].includes(w)) return true;
  if (['no', 'false', 'f', 'n', '0'].includes(w)) return false;
  return word;
}

function toNumber(word: string): number | string {
  const n = word.trim() === '' ? NaN : Number(word);
  return Number.isNaN(n) ? word : n;
}

function checked<T>(check: Check<T>, raw: unknown, where: string): T {
  const v = check.accept(raw);
  if (v !== BAD) return v;
  const shown = JSON.stringify(raw) ?? String(raw);
  const hint = typeof raw === 'string' && check.words ? didYouMean(raw, check.words) : '';
  throw new SftError(`${where} = ${shown.length > 80 ? shown.slice(0, 77) + '...' : shown} is not allowed; expected ${check.allowed}${hint}`);
}

// Required keys, defaults, rules between keys, and what this build does not do.
function complete(all: Record<string, unknown>, source: string): LoadedConfig {
  // The HF/Firefly keys sft does not keep: applied to schema keys, refused, or noted below.
  const values: Record<string, unknown> = {};
  const others: [string, unknown][] = [];
  for (const [k, v] of Object.entries(all)) {
    if (isKey(k)) values[k] = v;
    else others.push([k, v]);
  }
  const errors: string[] = [];
  const ignored = new Map<Why, string[]>();
  for (const [k, v] of others) {
    const spec = OTHER_KEYS[k];
    if (spec.apply) {
      const err = spec.apply(v, values);
      if (err) errors.push(err);
      continue;
    }
    if (spec.defaults.some((d) => sameValue(v, d))) continue;
    if (spec.refuse) errors.push(`${k}=${JSON.stringify(v)}: ${spec.refuse}`);
    else ignored.set(spec.why, [...(ignored.get(spec.why) ?? []), `${k}=${JSON.stringify(v)}`]);
  }

  const missing = KEYS.filter((k) => SCHEMA[k].default === REQUIRED && values[k] === undefined);
  if (missing.length > 0) {
    const list = missing.map((k) => `"${k}" (${SCHEMA[k].help})`).join(', ');
    throw new SftError(`${source}: missing required key${missing.length > 1 ? 's' : ''} ${list}`);
  }
  const given = new Set(Object.keys(values));
  const cfg: Record<string, unknown> = {};
  for (const k of KEYS) {
    const d = SCHEMA[k].default;
    cfg[k] = given.has(k) ? values[k] : Array.isArray(d) ? [...d] : d;
  }
  const config = cfg as unknown as TrainConfig;

  errors.push(...resolveBetweenKeys(config, given));
  const notices: string[] = [];
  for (const k of KEYS) {
    const spec = SCHEMA[k];
    if (sameValue(config[k], spec.default)) continue;
    if (spec.implemented === 'no-effect') {
      ignored.set('plumbing', [...(ignored.get('plumbing') ?? []), `${k}=${JSON.stringify(config[k])}`]);
      continue;
    }
    const finding = (spec.support as ((v: unknown, c: TrainConfig) => { notice: string } | { error: string } | undefined) | undefined)?.(config[k], config);
    if (finding && 'error' in finding) errors.push(finding.error);
    else if (finding) notices.push(finding.notice);
  }
  if (errors.length > 0) throw new SftError(errors.map((e) => `${source}: ${e}`).join('\n'));
  // One notice names every key that does nothing here, grouped by why.
  if (ignored.size > 0) {
    const groups = [...ignored].map(([why, list]) => `${list.join(', ')}: ${list.length > 1 ? 'have' : 'has'} no effect in sft (${whyText(why)})`);
    notices.push(`${groups.join('; ')}; ignored`);
  }
  return { config, notices };
}

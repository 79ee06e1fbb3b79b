// `sft train --help`'s list of config keys: what each takes and its default, in columns that fit a
// 100-column terminal. configs/README.md explains each key at length.
import { KEYS, REQUIRED, SCHEMA } from './schema.js';
import { OTHER_KEY_NAMES } from './hf-keys.js';

const KEY_W = 29, DEFAULT_W = 15;

/** The keys table and the list of keys accepted with no effect, at most `width` columns wide. */
export function keysHelp(width = 100): string {
  const out = ['Config keys (each can be overridden: --key value, --key=value, --flag, --no_flag):'];
  const room = Math.max(30, width - 2 - KEY_W - DEFAULT_W);
  for (const k of KEYS) {
    const lines = wrap(SCHEMA[k].check.allowed, room);
    out.push(`  ${k.padEnd(KEY_W - 1)} ${shownDefault(k).padEnd(DEFAULT_W - 1)} ${lines[0]}`);
    for (const l of lines.slice(1)) out.push(`${' '.repeat(2 + KEY_W + DEFAULT_W)}${l}`);
  }
  out.push('', 'Also accepted (HF TrainingArguments, HF scripts, older Firefly); applied where sft can, else named');
  out.push('in one notice when set to a non-default value:');
  for (const l of wrap([...OTHER_KEY_NAMES].sort().join(', '), width - 2)) out.push(`  ${l}`);
  return out.join('\n');
}

function shownDefault(k: (typeof KEYS)[number]): string {
  if (k === 'bits') return '16; qlora 4';  // resolveBetweenKeys: qlora (the default mode) means 4 bits
  if (k === 'report_to') return '"none"';
  const d = SCHEMA[k].default;
  if (d === REQUIRED) return 'required';
  // 5e-5 as written in configs, not 0.00005.
  return typeof d === 'number' && d !== 0 && Math.abs(d) < 1e-3 ? d.toExponential() : JSON.stringify(d);
}

/** Words into lines of at most `width` characters (a longer word gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line];
}

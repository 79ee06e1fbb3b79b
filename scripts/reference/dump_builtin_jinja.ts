// Writes test/fixtures/chat-template/builtin-jinja.json: each built-in template as the Jinja
// chat_template `sft merge` writes, for scripts/reference/chat_template_fixture.py to render with
// transformers. Run: npx tsx scripts/reference/dump_builtin_jinja.ts
import { writeFileSync } from 'node:fs';
import { BUILT_IN_NAMES, getTemplate } from '../../src/data/templates.js';
import { builtInJinja } from '../../src/data/chat-template.js';

const out = Object.fromEntries(BUILT_IN_NAMES.map((n) => [n, builtInJinja(getTemplate(n))]));
writeFileSync('test/fixtures/chat-template/builtin-jinja.json', JSON.stringify(out, null, 1) + '\n');

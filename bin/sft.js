#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (built by `npm install`).
import { main } from '../dist/cli/cli.js';
main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`sft: ${err?.message ?? err}\n`);
  process.exit(1);
});

// The SVG plot: well-formed, one curve per run, and points where a hand calculation puts them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { formatTick, linearAxis, logAxis, plotSvg, readRun, writeLossPlot } from '../../src/log/plot.js';
import plotCommand from '../../src/cli/commands/plot.js';
import { SftError } from '../../src/errors.js';

function runDir(name: string, rows: Record<string, unknown>[], extra = ''): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'sft-plot-')), name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'metrics.jsonl'), rows.map((r) => JSON.stringify(r) + '\n').join('') + extra);
  return dir;
}

const A = [
  { step: 10, epoch: 0.1, loss: 3, learning_rate: 1e-4 },
  { step: 20, epoch: 0.2, loss: 2, learning_rate: 2e-4 },
  { step: 40, epoch: 0.4, loss: 1, learning_rate: 0 },
];
const B = [
  { step: 10, epoch: 0.1, loss: 2.5, learning_rate: 1e-4 },
  { step: 30, epoch: 0.3, loss: null, learning_rate: 1e-4 }, // a diverged step: left out
  { step: 30, epoch: 0.3, loss: 1.5, learning_rate: 1e-4 }, // the same step again (resumed): the last wins
];

/** Tags balance, attribute values are quoted, no raw "<" or "&" in text. */
function assertWellFormed(svg: string): void {
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  const stack: string[] = [];
  const re = /<(\/?)([a-zA-Z]+)((?:\s+[a-zA-Z][a-zA-Z0-9:-]*="[^"<]*")*)\s*(\/?)>/g;
  let at = 0;
  for (let m = re.exec(svg); m; m = re.exec(svg)) {
    const between = svg.slice(at, m.index);
    assert.doesNotMatch(between, /[<>]|&(?!(amp|lt|gt|quot);)/, `stray markup before offset ${m.index}: ${between.slice(0, 60)}`);
    at = re.lastIndex;
    if (m[4]) continue; // <x/>
    if (m[1]) assert.equal(stack.pop(), m[2], `</${m[2]}> closes the wrong tag at ${m.index}`);
    else stack.push(m[2]);
  }
  assert.equal(svg.slice(at).trim(), '');
  assert.deepEqual(stack, []);
}

interface PanelInfo { frame: { x: number; y: number; w: number; h: number }; lines: Map<string, [number, number][]> }

function panel(svg: string, metric: string): PanelInfo {
  const g = new RegExp(`<g class="panel" data-metric="${metric}">([\\s\\S]*?)</g>`).exec(svg);
  assert.ok(g, `no ${metric} panel`);
  const f = /<rect class="frame" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"/.exec(g[1])!;
  const lines = new Map<string, [number, number][]>();
  for (const m of g[1].matchAll(/<polyline class="run" data-run="([^"]*)" points="([^"]*)"/g)) {
    assert.ok(!lines.has(m[1]), `two curves for ${m[1]}`);
    lines.set(m[1], m[2].split(' ').map((p) => p.split(',').map(Number) as [number, number]));
  }
  return { frame: { x: +f[1], y: +f[2], w: +f[3], h: +f[4] }, lines };
}

const near = (got: [number, number], want: [number, number]) =>
  assert.ok(Math.abs(got[0] - want[0]) < 0.02 && Math.abs(got[1] - want[1]) < 0.02, `point ${got} != ${want}`);

test('two runs: one curve each per panel, points where the axes put them', () => {
  const svg = plotSvg([readRun(runDir('run-a', A)), readRun(runDir('run-b', B))]);
  assertWellFormed(svg);
  assert.equal((svg.match(/<polyline/g) ?? []).length, 4); // loss + learning rate, per run

  // Loss panel: steps 0..40 across the frame (the last step logged is 40), loss 1..3 (ticks 1, 1.5, ... 3).
  const loss = panel(svg, 'loss');
  const { x, y, w, h } = loss.frame;
  assert.deepEqual([...loss.lines.keys()], ['run-a', 'run-b']);
  const a = loss.lines.get('run-a')!;
  assert.equal(a.length, 3);
  near(a[1], [x + w * (20 / 40), y + h * (1 - (2 - 1) / 2)]); // step 20, loss 2: the middle
  near(a[2], [x + w, y + h]); // step 40, loss 1: bottom right
  const b = loss.lines.get('run-b')!;
  assert.equal(b.length, 2);
  near(b[1], [x + w * (30 / 40), y + h * (1 - (1.5 - 1) / 2)]);
  for (const t of ['1.0', '1.5', '2.0', '2.5', '3.0']) assert.match(svg, new RegExp(`text-anchor="end">${t.replace('.', '\\.')}</text>`));

  // Learning-rate panel: 0..2e-4 on the same step axis.
  const lr = panel(svg, 'learning_rate');
  const p = lr.lines.get('run-a')!;
  near(p[1], [lr.frame.x + lr.frame.w * 0.5, lr.frame.y]); // 2e-4 at step 20: the top
  near(p[2], [lr.frame.x + lr.frame.w, lr.frame.y + lr.frame.h]); // 0 at step 40
  assert.match(svg, />2e-4<\/text>/);
  // The legend names each run with its last value.
  assert.match(svg, /run-a — last loss 1 at step 40/);
  assert.match(svg, /run-b — last loss 1\.5 at step 30/);
});

test('log scale: 1 to 10 spans the panel, and the square root of 10 sits in the middle', () => {
  const rows = [1, Math.sqrt(10), 10].map((loss, i) => ({ step: (i + 1) * 5, epoch: 1, loss, learning_rate: 1e-4 }));
  const svg = plotSvg([readRun(runDir('log', rows))], { logScale: true });
  assertWellFormed(svg);
  const { frame, lines } = panel(svg, 'loss');
  const pts = lines.get('log')!;
  near(pts[0], [frame.x + frame.w * (5 / 15), frame.y + frame.h]);
  near(pts[1], [frame.x + frame.w * (10 / 15), frame.y + frame.h / 2]);
  near(pts[2], [frame.x + frame.w, frame.y]);
  assert.match(svg, /loss \(log scale\)/);
});

test('axes: round bounds and 1-2-5 ticks; labels a reader can take in', () => {
  assert.deepEqual(linearAxis(0.93, 7.2), { lo: 0, hi: 8, log: false, ticks: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
  assert.deepEqual(linearAxis(0.93, 9.2).ticks, [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(linearAxis(1, 3).ticks, [1, 1.5, 2, 2.5, 3]);
  assert.deepEqual(linearAxis(2, 2), { lo: 1.8, hi: 2.2, log: false, ticks: [1.8, 1.9, 2, 2.1, 2.2] });
  assert.deepEqual(logAxis(0.85, 6.5), { lo: 0.5, hi: 10, log: true, ticks: [0.5, 1, 2, 5, 10] });
  assert.deepEqual(logAxis(0.001, 50).ticks, [0.001, 0.01, 0.1, 1, 10, 100]);
  assert.equal(formatTick(1.5e-4, 5e-5), '1.5e-4');
  assert.equal(formatTick(0, 5e-5), '0');
  assert.equal(formatTick(2, 0.5), '2.0');
  assert.equal(formatTick(250, 50), '250');
});

test('writeLossPlot writes output_dir/loss.svg; a half-written last line is skipped', () => {
  const dir = runDir('train-out', A, '{"step": 50, "lo');
  const run = readRun(dir);
  assert.equal(run.skipped, 1);
  assert.equal(run.records.length, 3);
  assert.equal(writeLossPlot(dir), join(dir, 'loss.svg'));
  const svg = readFileSync(join(dir, 'loss.svg'), 'utf8');
  assertWellFormed(svg);
  assert.equal(panel(svg, 'loss').lines.get('train-out')!.length, 3);

  assert.equal(writeLossPlot(runDir('empty', [])), undefined); // nothing logged: no plot
  assert.throws(() => readRun(mkdtempSync(join(tmpdir(), 'sft-plot-'))), (e: unknown) => e instanceof SftError && /no metrics\.jsonl here/.test(e.message));
  assert.throws(() => plotSvg([readRun(runDir('no-loss', [{ step: 1, learning_rate: 1 }]))]), /no loss values to plot in no-loss/);
});

test('sft plot: one run writes RUN_DIR/<metric>.svg; several go to --out', async () => {
  const a = runDir('run-a', A), b = runDir('run-b', B);
  const cli = () => yargs().command(plotCommand).exitProcess(false).fail((msg, err) => { throw err ?? new Error(msg); });
  await assert.rejects(async () => cli().parseAsync(['plot', a, '--metric', 'grad_norm']), /no grad_norm values to plot in run-a/);
  await cli().parseAsync(['plot', join(a, 'metrics.jsonl'), '--log']);
  assert.ok(existsSync(join(a, 'loss.svg')));
  const out = join(mkdtempSync(join(tmpdir(), 'sft-plot-')), 'cmp.svg');
  await cli().parseAsync(['plot', a, b, '--out', out, '--metric', 'learning_rate']);
  const svg = readFileSync(out, 'utf8');
  assertWellFormed(svg);
  assert.equal(panel(svg, 'learning_rate').lines.size, 2);
  assert.doesNotMatch(svg, /data-metric="loss"/);
});

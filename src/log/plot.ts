// Loss and learning-rate curves as a standalone SVG, drawn by hand from metrics.jsonl: one run at
// the end of training (<output_dir>/loss.svg), or several side by side (`sft plot RUN_DIR...`).
// Layout: the chosen metric in the top panel, the learning rate in a panel below on the same step
// axis, one colour per run, a legend naming each run with its last value. The loss panel also draws
// each run's eval_loss (evaluation during training), dashed with a dot per evaluation, in the run's colour.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import { basename, dirname, join, resolve } from 'node:path';
import { SftError } from '../errors.js';

export const PLOT_METRICS = ['loss', 'eval_loss', 'learning_rate', 'grad_norm'] as const;
export type PlotMetric = (typeof PLOT_METRICS)[number];

export interface Run {
  name: string;
  /** The run's folder (where metrics.jsonl is). */
  dir: string;
  /** Records in file order: { step, loss, learning_rate, grad_norm, ... }. */
  records: Record<string, unknown>[];
  /** Lines that were not JSON objects (e.g. the half-written last line of a run in progress). */
  skipped: number;
}

export interface PlotOptions {
  metric?: PlotMetric;
  /** Log scale for the top panel (values <= 0 are left out). */
  logScale?: boolean;
  title?: string;
}

/** Reads RUN_DIR/metrics.jsonl (or a metrics file named directly). */
export function readRun(path: string): Run {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, 'metrics.jsonl') : path;
  if (!existsSync(file)) throw new SftError(`${path}: no metrics.jsonl here — name an sft output_dir (or its metrics.jsonl)`);
  const records: Record<string, unknown>[] = [];
  let skipped = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      const r = JSON.parse(line) as unknown;
      if (typeof r === 'object' && r !== null && !Array.isArray(r)) records.push(r as Record<string, unknown>);
      else skipped++;
    } catch {
      skipped++;
    }
  }
  const dir = file === path ? dirname(resolve(path)) : resolve(path);
  return { name: basename(dir), dir, records, skipped };
}

/** Writes <outputDir>/loss.svg from <outputDir>/metrics.jsonl; returns its path, or undefined when
 *  no step was logged. */
export function writeLossPlot(outputDir: string): string | undefined {
  const run = readRun(outputDir);
  if (!series(run, 'loss', false).length) return undefined;
  const out = join(outputDir, 'loss.svg');
  writeFileAtomic(out, plotSvg([run], { metric: 'loss' }));
  return out;
}

interface Point { step: number; value: number }

/** The finite (and, on a log scale, positive) values of one metric, by step; a step logged twice
 *  (a resumed run) keeps its last value. */
export function series(run: Run, metric: string, logScale: boolean): Point[] {
  const byStep = new Map<number, number>();
  for (const r of run.records) {
    const step = r.step, v = r[metric];
    if (typeof step !== 'number' || !Number.isFinite(step) || typeof v !== 'number' || !Number.isFinite(v)) continue;
    if (logScale && v <= 0) continue;
    byStep.set(step, v);
  }
  return [...byStep].sort((a, b) => a[0] - b[0]).map(([step, value]) => ({ step, value }));
}

// ---- geometry -------------------------------------------------------------------------------------

const WIDTH = 860;
const LEFT = 78, RIGHT = 24; // room for tick labels on the left
const TOP = 48; // below the title
const MAIN_H = 300, LR_H = 130, GAP = 46, BOTTOM = 52;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/** A linear or log10 axis from lo to hi, with its ticks. */
interface Axis { lo: number; hi: number; log: boolean; ticks: number[] }

/** 1, 2 or 5 times a power of ten, near `raw`. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/** Round bounds that hold [min, max], and about five ticks between them. */
export function linearAxis(min: number, max: number, target = 5): Axis {
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / target);
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let k = 0; lo + k * step <= hi + step * 1e-9; k++) ticks.push(clean(lo + k * step));
  return { lo: clean(lo), hi: clean(hi), log: false, ticks };
}

/** Bounds at 1, 2 or 5 times a power of ten around [min, max] (min > 0), ticks at 1, 2 and 5 of each
 *  decade; whole decades for bounds and ticks when the range spans more than three. */
export function logAxis(min: number, max: number): Axis {
  const marks = (e0: number, e1: number, ms: number[]) => {
    const out: number[] = [];
    for (let e = e0; e <= e1; e++) for (const m of ms) out.push(clean(m * 10 ** e));
    return out;
  };
  const e0 = Math.floor(Math.log10(min)), e1 = Math.ceil(Math.log10(max));
  if (e1 - e0 > 3) return { lo: 10 ** e0, hi: 10 ** e1, log: true, ticks: marks(e0, e1, [1]).filter((t) => t <= 10 ** e1 * (1 + 1e-9)) };
  const steps = marks(e0, e1, [1, 2, 5]);
  const lo = [...steps].reverse().find((t) => t <= min * (1 + 1e-9)) ?? 10 ** e0;
  let hi = steps.find((t) => t >= max * (1 - 1e-9)) ?? 10 ** e1;
  if (hi <= lo) hi = steps[steps.indexOf(lo) + 1];
  return { lo, hi, log: true, ticks: steps.filter((t) => t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) };
}

/** Steps from 0 (or the first step logged, for a run resumed far from 0) to the last. */
function stepAxis(steps: number[]): Axis {
  const min = steps.reduce((a, b) => Math.min(a, b), Infinity), max = steps.reduce((a, b) => Math.max(a, b), -Infinity);
  const lo = min <= (max - min) ? 0 : min;
  const a = linearAxis(lo, Math.max(max, lo + 1));
  // The axis ends at the last step, not at a rounded-up tick: curves use the full width.
  const hi = Math.max(max, lo + 1);
  return { lo, hi, log: false, ticks: a.ticks.filter((t) => t >= lo && t <= hi) };
}

const clean = (x: number) => Number(x.toPrecision(12));

function frac(a: Axis, v: number): number {
  return a.log ? (Math.log10(v) - Math.log10(a.lo)) / (Math.log10(a.hi) - Math.log10(a.lo)) : (v - a.lo) / (a.hi - a.lo);
}

/** Tick labels: plain decimals for ordinary numbers, 1e-4 style for tiny or huge ones. */
export function formatTick(v: number, step: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) return v.toExponential().replace(/\.?0+e/, 'e').replace('e+', 'e');
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toFixed(decimals);
}

/** A value for the legend: four significant digits. */
function formatValue(v: number): string {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3).replace(/\.?0+e/, 'e').replace('e+', 'e') : String(Number(v.toPrecision(4)));
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const f1 = (x: number) => String(Math.round(x * 100) / 100);

interface Panel { metric: string; top: number; height: number; y: Axis; label: string }

/** The SVG text for `runs`. Throws SftError when no run has a value of the metric. */
export function plotSvg(runs: Run[], opts: PlotOptions = {}): string {
  const metric = opts.metric ?? 'loss';
  const logScale = opts.logScale ?? false;
  const main = runs.map((r) => series(r, metric, logScale));
  if (main.every((s) => s.length === 0)) {
    throw new SftError(`no ${metric} values to plot in ${runs.map((r) => r.name).join(', ')} (metrics.jsonl has no logged steps yet?)`);
  }
  // Evaluation lines beside the training loss.
  const evals = metric === 'loss' ? runs.map((r) => series(r, 'eval_loss', logScale)) : runs.map(() => []);
  const withLr = metric !== 'learning_rate';
  const lr = withLr ? runs.map((r) => series(r, 'learning_rate', false)) : [];
  const drawLr = lr.some((s) => s.length > 0);

  const all = [...main, ...evals, ...lr].flat();
  const x = stepAxis(all.map((p) => p.step));
  const mv = [...main, ...evals].flat().map((p) => p.value);
  const panels: Panel[] = [{
    metric, top: TOP + legendHeight(runs.length), height: MAIN_H,
    y: (logScale ? logAxis : linearAxis)(mv.reduce((a, b) => Math.min(a, b), Infinity), mv.reduce((a, b) => Math.max(a, b), -Infinity)),
    label: metric.replace(/_/g, ' ') + (logScale ? ' (log scale)' : ''),
  }];
  if (drawLr) {
    const lv = lr.flat().map((p) => p.value);
    panels.push({ metric: 'learning_rate', top: panels[0].top + MAIN_H + GAP, height: LR_H, y: linearAxis(lv.reduce((a, b) => Math.min(a, b), 0), lv.reduce((a, b) => Math.max(a, b), -Infinity), 3), label: 'learning rate' });
  }
  const last = panels[panels.length - 1];
  const height = last.top + last.height + BOTTOM;
  const plotW = WIDTH - LEFT - RIGHT;
  const px = (step: number) => LEFT + frac(x, step) * plotW;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${WIDTH}" height="${height}" fill="white"/>`);
  const title = opts.title ?? `${metric.replace(/_/g, ' ')} — ${runs.map((r) => r.name).join(', ')}`;
  out.push(`<text x="${WIDTH / 2}" y="26" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  out.push(legend(runs, main, metric, evals));

  panels.forEach((p, pi) => {
    const py = (v: number) => p.top + (1 - frac(p.y, v)) * p.height;
    const data = pi === 0 ? main : lr;
    out.push(`<g class="panel" data-metric="${p.metric}">`);
    out.push(`<rect class="frame" x="${LEFT}" y="${p.top}" width="${plotW}" height="${p.height}" fill="none" stroke="#444"/>`);
    // Grid lines and tick labels.
    const yStep = p.y.ticks.length > 1 ? p.y.ticks[1] - p.y.ticks[0] : 1;
    for (const t of p.y.ticks) {
      const y = f1(py(t));
      out.push(`<line x1="${LEFT}" y1="${y}" x2="${LEFT + plotW}" y2="${y}" stroke="#e4e4e4"/>`);
      out.push(`<line x1="${LEFT - 5}" y1="${y}" x2="${LEFT}" y2="${y}" stroke="#444"/>`);
      out.push(`<text x="${LEFT - 8}" y="${y}" dy="4" text-anchor="end">${formatTick(t, p.y.log ? t : yStep)}</text>`);
    }
    const xStep = x.ticks.length > 1 ? x.ticks[1] - x.ticks[0] : 1;
    for (const t of x.ticks) {
      const xx = f1(px(t));
      out.push(`<line x1="${xx}" y1="${p.top}" x2="${xx}" y2="${p.top + p.height}" stroke="#f0f0f0"/>`);
      out.push(`<line x1="${xx}" y1="${p.top + p.height}" x2="${xx}" y2="${p.top + p.height + 5}" stroke="#444"/>`);
      out.push(`<text x="${xx}" y="${p.top + p.height + 18}" text-anchor="middle">${formatTick(t, xStep)}</text>`);
    }
    out.push(`<text transform="translate(18 ${f1(p.top + p.height / 2)}) rotate(-90)" text-anchor="middle" font-size="13">${esc(p.label)}</text>`);
    if (pi === panels.length - 1) out.push(`<text x="${LEFT + plotW / 2}" y="${p.top + p.height + 40}" text-anchor="middle" font-size="13">step</text>`);
    // The curves, clipped to the frame (a log axis leaves out values <= 0, nothing else is outside).
    data.forEach((s, ri) => {
      if (s.length === 0) return;
      const color = COLORS[ri % COLORS.length];
      const pts = s.map((q) => `${f1(px(q.step))},${f1(py(q.value))}`).join(' ');
      out.push(`<polyline class="run" data-run="${esc(runs[ri].name)}" points="${pts}" fill="none" stroke="${color}" stroke-width="1.8" stroke-linejoin="round"/>`);
      if (s.length === 1) out.push(`<circle cx="${f1(px(s[0].step))}" cy="${f1(py(s[0].value))}" r="3" fill="${color}"/>`);
    });
    if (pi === 0) {
      evals.forEach((s, ri) => {
        if (s.length === 0) return;
        const color = COLORS[ri % COLORS.length];
        const pts = s.map((q) => `${f1(px(q.step))},${f1(py(q.value))}`).join(' ');
        out.push(`<polyline class="eval" data-run="${esc(runs[ri].name)}" points="${pts}" fill="none" stroke="${color}" stroke-width="1.8" stroke-dasharray="6 4"/>`);
        for (const q of s) out.push(`<circle class="eval" cx="${f1(px(q.step))}" cy="${f1(py(q.value))}" r="3" fill="white" stroke="${color}" stroke-width="1.5"/>`);
      });
    }
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

const LEGEND_ROW = 18;
const legendHeight = (n: number) => Math.ceil(n / 2) * LEGEND_ROW + 6;

/** Two columns under the title: colour, run name, last value and its step (and the last eval_loss). */
function legend(runs: Run[], main: Point[][], metric: string, evals: Point[][]): string {
  const parts: string[] = ['<g class="legend">'];
  const colW = (WIDTH - LEFT - RIGHT) / 2;
  runs.forEach((r, i) => {
    const x = LEFT + (i % 2) * colW, y = TOP + Math.floor(i / 2) * LEGEND_ROW;
    const s = main[i];
    const e = evals[i];
    const lastText = (s.length ? ` — last ${metric.replace(/_/g, ' ')} ${formatValue(s[s.length - 1].value)} at step ${s[s.length - 1].step}` : ' — no values') +
      (e.length ? `, eval loss (dashed) ${formatValue(e[e.length - 1].value)} at step ${e[e.length - 1].step}` : '');
    parts.push(`<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"/>`);
    parts.push(`<text x="${x + 28}" y="${y}" dy="4">${esc(r.name)}${esc(lastText)}</text>`);
  });
  parts.push('</g>');
  return parts.join('\n');
}

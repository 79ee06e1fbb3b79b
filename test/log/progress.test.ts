import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Progress, clock } from '../../src/log/progress.js';

/** A stream that records what is written; isTTY as asked. */
function sink(isTTY: boolean) {
  const chunks: string[] = [];
  const s = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  }) as Writable & { isTTY?: boolean; columns?: number };
  s.isTTY = isTTY;
  s.columns = 120;
  return { stream: s, text: () => chunks.join('') };
}

test('not a TTY: plain lines at logging steps, with ETA from the average pace', () => {
  const out = sink(false);
  let now = 1_000_000;
  const p = new Progress({ stream: out.stream, logEvery: 10, now: () => now });
  p.start(100);
  now += 5_000;
  p.update(5, { loss: 3, lr: 1e-4 }); // not a logging step: silent
  now += 5_000;
  p.update(10, { loss: 2.5, lr: 1e-4, tokensPerSecond: 1234.4 });
  p.log('saving checkpoint-10');
  now += 80_000;
  p.update(95, { loss: 1.25 }); // silent; lr and tok/s are kept
  now += 5_000;
  p.update(100);
  p.stop();
  assert.equal(
    out.text(),
    'step 10/100 | loss 2.5000 | lr 1.00e-04 | 1234 tok/s | elapsed 0:00:10 | ETA 0:01:30\n' +
      'saving checkpoint-10\n' +
      'step 100/100 | loss 1.2500 | lr 1.00e-04 | 1234 tok/s | elapsed 0:01:35 | ETA 0:00:00\n',
  );
});

test('bar: false gives plain lines even on a TTY; logEvery defaults to every update', () => {
  const out = sink(true);
  let now = 0;
  const p = new Progress({ stream: out.stream, bar: false, now: () => now });
  p.start(4);
  now = 2_000;
  p.update(1, { loss: 1 });
  assert.equal(out.text(), 'step 1/4 | loss 1.0000 | elapsed 0:00:02 | ETA 0:00:06\n');
  p.stop();
});

test('TTY: a bar with step/total, loss, lr and tok/s; log lines print above it', () => {
  const out = sink(true);
  const p = new Progress({ stream: out.stream });
  p.start(50);
  p.update(10, { loss: 2.5, lr: 3e-3, tokensPerSecond: 99.6 });
  p.log('saved output/x/checkpoint-10');
  p.stop(); // must also end cli-progress's redraw timer, or this test would never finish
  const text = out.text();
  assert.ok(text.includes('saved output/x/checkpoint-10\n'), text);
  assert.ok(text.includes('10/50 | epoch - | loss 2.5000 | grad_norm - | lr 3.00e-03 | 100 tok/s | 0:00:00<'), text);
  assert.ok(text.includes('\u001b['), 'expected terminal control sequences in bar mode');
});

test('TTY: the bar shows epoch, grad norm, eval loss (once evaluated) and elapsed<ETA', () => {
  const out = sink(true);
  let now = 0;
  const p = new Progress({ stream: out.stream, now: () => now });
  p.start(40);
  now = 20_000;
  p.update(10, { loss: 2.5, lr: 3e-3, tokensPerSecond: 50, epoch: 0.25, gradNorm: 1.23456 });
  p.update(10, { evalLoss: 2.75 });
  p.stop();
  const text = out.text();
  assert.ok(text.includes('10/40 | epoch 0.25 | loss 2.5000 | grad_norm 1.235 | lr 3.00e-03 | eval_loss 2.7500 | 50 tok/s | 0:00:20<0:01:00'), text);
});

test('plain lines carry epoch, grad norm and the last eval loss', () => {
  const out = sink(false);
  let now = 0;
  const p = new Progress({ stream: out.stream, now: () => now });
  p.start(8);
  now = 4_000;
  p.update(2, { loss: 1.5, lr: 1e-3, epoch: 0.5, gradNorm: 0.5 });
  // An evaluation after step 2 is recorded, not printed as step 2 again (the run logs its own line).
  p.record({ evalLoss: 1.625 });
  now = 6_000;
  p.update(3, { loss: 1.25 });
  assert.equal(
    out.text(),
    'step 2/8 | epoch 0.50 | loss 1.5000 | grad_norm 0.500 | lr 1.00e-03 | elapsed 0:00:04 | ETA 0:00:12\n' +
      'step 3/8 | epoch 0.50 | loss 1.2500 | grad_norm 0.500 | lr 1.00e-03 | eval_loss 1.6250 | elapsed 0:00:06 | ETA 0:00:10\n',
  );
});

test('a resumed run: ETA from the steps this process ran, not from the steps before the resume', () => {
  // Resumed at step 50 of 100; 10 steps in 10 s: 40 steps left take 40 s (the old rule,
  // 10 s / 60 steps, gave 7 s: the "ETA 0:00:01 with 14 s left" of issue 12).
  const out = sink(false);
  let now = 0;
  const p = new Progress({ stream: out.stream, logEvery: 10, now: () => now });
  p.start(100, 50);
  now = 10_000;
  p.update(60, { loss: 1 });
  assert.equal(out.text(), 'step 60/100 | loss 1.0000 | elapsed 0:00:10 | ETA 0:00:40\n');
  const bar = sink(true);
  const q = new Progress({ stream: bar.stream, now: () => now });
  now = 0;
  q.start(100, 50);
  now = 10_000;
  q.update(60, { loss: 1 });
  q.stop();
  assert.ok(bar.text().includes('60/100 | epoch - | loss 1.0000 | grad_norm - | lr - | - tok/s | 0:00:10<0:00:40'), bar.text());
});

test('clock formats h:mm:ss', () => {
  assert.equal(clock(0), '0:00:00');
  assert.equal(clock(59.6), '0:01:00');
  assert.equal(clock(3723), '1:02:03');
});

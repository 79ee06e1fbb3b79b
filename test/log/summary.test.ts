// Expected text comes from HF's log_metrics()/metrics_format() run in Python on the same numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flosFor, formatMetrics, printMetrics, pyFloat, secondsToTimedelta, trainSummary } from '../../src/log/summary.js';

test('trainSummary gives HF Trainer\'s keys and rounding', () => {
  const m = trainSummary({ runtimeSec: 83.456789, samples: 1200, steps: 150, trainLoss: 1.23456789, totalFlos: 5 * 2 ** 30 + 7, epoch: 3.3333333 });
  assert.deepEqual(m, {
    train_runtime: 83.4568,
    train_samples_per_second: 14.379,
    train_steps_per_second: 1.797,
    total_flos: 5368709127,
    train_loss: 1.23456789,
    epoch: 3.3333333,
  });
});

test('a zero runtime gives no rates (HF skips them), tokens add a rate', () => {
  assert.deepEqual(Object.keys(trainSummary({ runtimeSec: 0, samples: 8, steps: 1, trainLoss: 1, totalFlos: 0 })).sort(), ['total_flos', 'train_loss', 'train_runtime']);
  assert.equal(trainSummary({ runtimeSec: 4, samples: 8, steps: 1, trainLoss: 1, totalFlos: 0, tokens: 1000 }).train_tokens_per_second, 250);
});

test('the printed block matches HF log_metrics', () => {
  const m = { train_runtime: 83.4568, train_samples_per_second: 14.379, train_steps_per_second: 1.797, total_flos: 5368709127, train_loss: 1.23456789, epoch: 3.3333333 };
  assert.equal(
    formatMetrics('train', m),
    [
      '***** train metrics *****',
      '  epoch                    =     3.3333',
      '  total_flos               =        5GF',
      '  train_loss               =     1.2346',
      '  train_runtime            = 0:01:23.45',
      '  train_samples_per_second =     14.379',
      '  train_steps_per_second   =      1.797',
      '',
    ].join('\n'),
  );
  const m2 = { train_runtime: 90061.5, train_samples_per_second: 0, train_steps_per_second: 0, total_flos: 0, train_loss: 2, epoch: 1 };
  let printed = '';
  printMetrics('train', m2, (s) => (printed += s));
  assert.equal(
    printed,
    [
      '***** train metrics *****',
      '  epoch                    =               1.0',
      '  total_flos               =               0GF',
      '  train_loss               =               2.0',
      '  train_runtime            = 1 day, 1:01:01.50',
      '  train_samples_per_second =               0.0',
      '  train_steps_per_second   =               0.0',
      '',
    ].join('\n'),
  );
});

test('other integer metrics print as integers', () => {
  assert.equal(formatMetrics('train', { train_samples: 360 }), '***** train metrics *****\n  train_samples = 360\n');
});

test('pyFloat matches Python repr()', () => {
  const cases: [number, string][] = [
    [1e-5, '1e-05'], [0.0001, '0.0001'], [1.5e-5, '1.5e-05'], [1e16, '1e+16'], [123456789.125, '123456789.125'],
    [0.1 + 0.2, '0.30000000000000004'], [2, '2.0'], [-3.5e-7, '-3.5e-07'], [1e22, '1e+22'],
    [12345678901234567, '1.2345678901234568e+16'], [0, '0.0'], [-2.5, '-2.5'], [NaN, 'nan'],
  ];
  for (const [v, s] of cases) assert.equal(pyFloat(v), s, String(v));
});

test('secondsToTimedelta matches Python timedelta + hundredths', () => {
  assert.equal(secondsToTimedelta(83.4568), '0:01:23.45');
  assert.equal(secondsToTimedelta(0), '0:00:00.00');
  assert.equal(secondsToTimedelta(172800 + 3661), '2 days, 1:01:01.00');
});

test('flosFor is 6 * tokens * parameters', () => {
  assert.equal(flosFor(1000, 7e9), 4.2e13);
});

// How many cases a fuzz test runs. `npm test` runs a quarter of each test's full count, which keeps
// the suite within its few minutes while every kind of damage is still reached; FUZZ_SCALE=1 runs
// the full counts, and larger values search deeper (before a release, after touching a reader).
// A case's number fixes its input whatever the scale, so a failure replays with FUZZ_CASE=N.
const DEFAULT_SCALE = 0.25;

export function fuzzScale(): number {
  const raw = process.env.FUZZ_SCALE;
  if (raw === undefined || raw === '') return DEFAULT_SCALE;
  const s = Number(raw);
  if (!Number.isFinite(s) || s <= 0) throw new Error(`FUZZ_SCALE=${raw}: expected a positive number such as 0.25, 1 or 10`);
  return s;
}

/** The cases to run for a test whose full count is `full`; never below `min`. */
export function fuzzCount(full: number, min = 40): number {
  return Math.max(min, Math.round(full * fuzzScale()));
}

/** A count written for a test name: 1250 -> "1,250". */
export function countText(n: number): string {
  return n.toLocaleString('en-US');
}

/**
 * Exact decimal comparisons and the cost rule, bit for bit as Python's `decimal` module computes
 * them in `schemas/models.py` (`_cost_total_matches`). The rule is decided the way Python decides
 * it, rounding included, so that the two languages give the same verdict for every record, even
 * hostile ones (an amount of a million digits, an exponent of 10^18): first exactly within 50
 * significant digits (Python's `_EXACT_CONTEXT`, which traps Inexact and Overflow), else at a
 * precision of `min(max(top - bottom + 3, 28), 10000)` digits, rounding half to even.
 *
 * A general decimal library does not fit: decimal.js and big.js cap exponents near 9e15 where
 * Python's `Decimal` goes to 10^18, and none reproduces `decimal`'s context rules (Etiny, the
 * `_normalize` shortcut of its addition). This is the part of the General Decimal Arithmetic
 * specification the rule needs (addition, subtraction, comparison) over `bigint`s, following
 * CPython's `_pydecimal`.
 */

import { JsonNumber } from "./json.js";

/** A finite decimal: `(-1)^sign * coefficient * 10^exponent`. */
export interface Decimal {
  readonly negative: boolean;
  readonly coefficient: bigint;
  readonly exponent: bigint;
}

/** Python's `MAX_EMAX` / `MIN_EMIN` on 64-bit builds. */
const MAX_EMAX = 999_999_999_999_999_999n;
const MIN_EMIN = -999_999_999_999_999_999n;
/** `COST_TOLERANCE` of `schemas/models.py`. */
const TOLERANCE: Decimal = { negative: false, coefficient: 1n, exponent: -6n };
const MAX_PRECISION = 10_000n;

/** The exact value of a JSON number literal (an integer literal has exponent 0). */
export function toDecimal(value: JsonNumber): Decimal {
  const match = /^(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?$/.exec(value.literal);
  if (match === null) throw new RangeError(`${value.literal} is not a JSON number`);
  const fraction = match[3] ?? "";
  const coefficient = BigInt((match[2] ?? "0") + fraction);
  return {
    // Python: Decimal(int("-0")) is +0; Decimal("-0.0") keeps its sign (it still compares == 0).
    negative: match[1] === "-" && !(value.isInteger && coefficient === 0n),
    coefficient,
    exponent: BigInt(match[4] ?? "0") - BigInt(fraction.length),
  };
}

function digitCount(coefficient: bigint): bigint {
  return BigInt(coefficient.toString().length);
}

/** Python's `Decimal.adjusted()`: the exponent of the most significant digit. */
function adjusted(value: Decimal): bigint {
  return value.exponent + digitCount(value.coefficient) - 1n;
}

/** -1, 0 or 1 as `a` is less than, equal to or greater than `b` (exact, any exponents). */
export function compareDecimals(a: Decimal, b: Decimal): number {
  const aZero = a.coefficient === 0n;
  const bZero = b.coefficient === 0n;
  if (aZero && bZero) return 0;
  const aSign = aZero ? 0 : a.negative ? -1 : 1;
  const bSign = bZero ? 0 : b.negative ? -1 : 1;
  if (aSign !== bSign) return aSign < bSign ? -1 : 1;
  const magnitude = compareMagnitudes(a, b);
  return aSign < 0 ? -magnitude : magnitude;
}

function compareMagnitudes(a: Decimal, b: Decimal): number {
  const adjustedA = adjusted(a);
  const adjustedB = adjusted(b);
  if (adjustedA !== adjustedB) return adjustedA < adjustedB ? -1 : 1;
  // Same adjusted exponent: the exponents differ by at most the coefficients' lengths.
  let ca = a.coefficient;
  let cb = b.coefficient;
  if (a.exponent > b.exponent) ca *= 10n ** (a.exponent - b.exponent);
  else if (b.exponent > a.exponent) cb *= 10n ** (b.exponent - a.exponent);
  return ca === cb ? 0 : ca < cb ? -1 : 1;
}

/** Whether `value >= 0` (Python: `-0.0 >= 0` is true). */
export function isNonNegative(value: JsonNumber): boolean {
  const d = toDecimal(value);
  return d.coefficient === 0n || !d.negative;
}

/** Whether `value > 0`. */
export function isPositive(value: JsonNumber): boolean {
  const d = toDecimal(value);
  return d.coefficient !== 0n && !d.negative;
}

// --- context arithmetic (CPython's _pydecimal, finite operands only) ---------------------------

interface Context {
  readonly precision: bigint;
  readonly emax: bigint;
  readonly emin: bigint;
  /** Python's traps=[Inexact, Overflow]: a trapped condition aborts the computation. */
  readonly traps: boolean;
}

class Trapped extends Error {}

/** A rounded result: a finite decimal, or null for an infinity (an untrapped overflow). */
type Rounded = Decimal | null;

/** `Decimal._fix`: round `value` to the context's precision and exponent range. */
function fix(value: Decimal, ctx: Context): Rounded {
  const etiny = ctx.emin - ctx.precision + 1n;
  const etop = ctx.emax - ctx.precision + 1n;
  if (value.coefficient === 0n) {
    const exponent = value.exponent < etiny ? etiny : value.exponent > ctx.emax ? ctx.emax : value.exponent;
    return { ...value, exponent };
  }
  const digits = value.coefficient.toString();
  const length = BigInt(digits.length);
  let expMin = length + value.exponent - ctx.precision;
  if (expMin > etop) return overflow(ctx);
  if (expMin < etiny) expMin = etiny;
  if (value.exponent >= expMin) return value;

  let kept = length + value.exponent - expMin; // digits of the coefficient that stay
  let text = digits;
  if (kept < 0n) {
    text = "1"; // stands for "something below the last kept digit" (Python does the same)
    kept = 0n;
  }
  const cut = Number(kept);
  const changed = roundHalfEven(text, cut);
  let coefficient = BigInt(text.slice(0, cut) || "0");
  if (changed > 0) {
    coefficient += 1n;
    if (digitCount(coefficient) > ctx.precision) {
      coefficient /= 10n;
      expMin += 1n;
    }
  }
  if (expMin > etop) return overflow(ctx);
  if (changed !== 0 && ctx.traps) throw new Trapped("Inexact");
  return { negative: value.negative, coefficient, exponent: expMin };
}

function overflow(ctx: Context): Rounded {
  if (ctx.traps) throw new Trapped("Overflow");
  return null; // ROUND_HALF_EVEN overflows to an infinity
}

/** `_round_half_even`: 1 to round up, 0 when exact, -1 when truncated (digits discarded). */
function roundHalfEven(digits: string, keep: number): number {
  const rest = digits.slice(keep);
  if (/^0*$/.test(rest)) return 0;
  const isHalf = /^50*$/.test(rest);
  if (isHalf && (keep === 0 || "02468".includes(digits[keep - 1] ?? "0"))) return -1;
  return "56789".includes(rest[0] ?? "0") ? 1 : -1;
}

/** `Decimal.__add__` with `context` (rounding half-even), for finite operands. */
function add(a: Decimal, b: Decimal, ctx: Context): Rounded {
  let exponent = a.exponent < b.exponent ? a.exponent : b.exponent;
  if (a.coefficient === 0n && b.coefficient === 0n) {
    return fix({ negative: a.negative && b.negative, coefficient: 0n, exponent }, ctx);
  }
  if (a.coefficient === 0n || b.coefficient === 0n) {
    const other = a.coefficient === 0n ? b : a;
    const floor = other.exponent - ctx.precision - 1n;
    if (floor > exponent) exponent = floor;
    const coefficient = other.coefficient * 10n ** (other.exponent - exponent);
    return fix({ negative: other.negative, coefficient, exponent }, ctx);
  }
  // _normalize: bring both to one exponent; an operand far below the other's last digit that
  // matters is replaced by 1 at a position just below it (same rounded result, bounded work).
  let big = { ...a };
  let small = { ...b };
  const swapped = a.exponent < b.exponent;
  if (swapped) [big, small] = [small, big];
  const bigLength = digitCount(big.coefficient);
  const smallLength = digitCount(small.coefficient);
  const shortcut = bigLength - ctx.precision - 2n;
  const floor = big.exponent + (shortcut < -1n ? shortcut : -1n);
  if (smallLength + small.exponent - 1n < floor) {
    small = { ...small, coefficient: 1n, exponent: floor };
  }
  big = { ...big, coefficient: big.coefficient * 10n ** (big.exponent - small.exponent), exponent: small.exponent };
  let op1 = swapped ? small : big;
  let op2 = swapped ? big : small;

  let negative: boolean;
  if (op1.negative !== op2.negative) {
    if (op1.coefficient === op2.coefficient) {
      return fix({ negative: false, coefficient: 0n, exponent }, ctx);
    }
    if (op1.coefficient < op2.coefficient) [op1, op2] = [op2, op1];
    negative = op1.negative;
    const coefficient = op1.coefficient - op2.coefficient;
    return fix({ negative, coefficient, exponent: op1.exponent }, ctx);
  }
  negative = op1.negative;
  return fix({ negative, coefficient: op1.coefficient + op2.coefficient, exponent: op1.exponent }, ctx);
}

function negate(value: Decimal): Decimal {
  return { ...value, negative: !value.negative };
}

/** `|total - (a + b)| <= 0.000001` in `ctx`; an infinite intermediate never matches. */
function totalMatchesIn(total: Decimal, a: Decimal, b: Decimal, ctx: Context): boolean {
  const sum = add(a, b, ctx);
  if (sum === null) return false;
  const difference = add(total, negate(sum), ctx);
  if (difference === null) return false;
  return compareDecimals({ ...difference, negative: false }, TOLERANCE) <= 0;
}

const EXACT: Context = { precision: 50n, emax: MAX_EMAX, emin: MIN_EMIN, traps: true };

/**
 * The cost rule of `schemas/models.py`: whether `total` equals `input + output` within
 * 0.000001, computed exactly as `_cost_total_matches` does (see the module comment).
 */
export function costTotalMatches(total: JsonNumber, input: JsonNumber, output: JsonNumber): boolean {
  const numbers = [toDecimal(total), toDecimal(input), toDecimal(output)] as const;
  try {
    return totalMatchesIn(numbers[0], numbers[1], numbers[2], EXACT);
  } catch (error) {
    if (!(error instanceof Trapped)) throw error;
  }
  let top: bigint | undefined;
  let bottom = numbers[0].exponent;
  for (const n of numbers) {
    if (n.coefficient !== 0n) {
      const a = adjusted(n);
      if (top === undefined || a > top) top = a;
    }
    if (n.exponent < bottom) bottom = n.exponent;
  }
  let precision = (top ?? 0n) - bottom + 3n;
  if (precision < 28n) precision = 28n;
  if (precision > MAX_PRECISION) precision = MAX_PRECISION;
  const ctx: Context = { precision, emax: MAX_EMAX, emin: MIN_EMIN, traps: false };
  return totalMatchesIn(numbers[0], numbers[1], numbers[2], ctx);
}

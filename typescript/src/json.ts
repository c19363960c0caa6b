/**
 * JSON for money, as the Python reference reads it (`schemas/jsoncodec.py`): every number keeps
 * its literal text, so `0.1` stays `0.1`, `1E+400` is a finite amount and a 30-digit integer is
 * a count, and `1.0` is not an integer. `JSON.parse` cannot do this (every number becomes a
 * float64), and `lossless-json` refuses duplicate keys where Python (and PostgreSQL's jsonb) keep
 * the last value, so this module has its own small parser.
 *
 * What {@link parseJson} refuses is exactly what Python's `schemas.jsoncodec.loads` refuses (the
 * `invalid_json` reason code), plus the contract's nesting limit: bytes that are not UTF-8 (a BOM
 * is not whitespace), anything outside RFC 8259's grammar, `NaN`/`Infinity`, control characters in
 * strings, a string or key holding a lone UTF-16 surrogate escape (checked on the final value: a
 * duplicate key's earlier value does not count, as in Python), an integer literal of more than
 * {@link MAX_INTEGER_DIGITS} digits (Python's int limit), and nesting deeper than
 * {@link MAX_DEPTH} arrays/objects. A non-integer literal outside Python's `Decimal` range is
 * JSON and is kept ({@link JsonNumber.isExactDecimal} is false): a contract field refuses it
 * (`schema_violation`), an unknown field keeps it, as the reference does.
 */

/** Deepest nesting of arrays and objects a record may have; the top-level value is level 1. */
export const MAX_DEPTH = 64;
/** Longest integer literal (digits, sign aside): Python's `int` refuses longer ones by default. */
export const MAX_INTEGER_DIGITS = 4300;
/** Largest adjusted exponent of a Python `Decimal` (libmpdec's MAX_EMAX, 64-bit). */
const DECIMAL_MAX_ADJUSTED = 999_999_999_999_999_999n;
/** Smallest exponent of a Python `Decimal` (libmpdec's MIN_ETINY, 64-bit). */
const DECIMAL_MIN_EXPONENT = -1_999_999_999_999_999_997n;

const INTEGER_LITERAL = /^-?(?:0|[1-9][0-9]*)$/;
const NUMBER_LITERAL = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$/;

/**
 * A JSON number, kept as its literal text. Integers are the literals without fraction or
 * exponent (`1`, `-0`, 30 digits); `1.0` and `1e2` are decimals. It is never converted to a
 * float unless you ask ({@link JsonNumber.toNumber}).
 */
export class JsonNumber {
  /** The literal as written (and as it is sent on the wire). */
  readonly literal: string;

  /** Throws `RangeError` unless `literal` is a JSON number within the limits of this module. */
  constructor(literal: string) {
    const problem = numberProblem(literal);
    if (problem !== null) throw new RangeError(problem);
    this.literal = literal;
  }

  /** Whether the literal is an integer literal (no fraction, no exponent). */
  get isInteger(): boolean {
    return INTEGER_LITERAL.test(this.literal);
  }

  /** Whether an exact decimal can hold it (Python's `Decimal`: the exponent within range). */
  get isExactDecimal(): boolean {
    return this.isInteger || decimalRangeProblem(this.literal) === null;
  }

  /** The literal text: exact. */
  toString(): string {
    return this.literal;
  }

  /** The JSON text is the literal (used by {@link stringifyJson}; `JSON.stringify` would quote it). */
  toJSON(): string {
    return this.literal;
  }

  /** The integer as a `bigint` (exact); throws `RangeError` for a decimal literal. */
  toBigInt(): bigint {
    if (!this.isInteger) throw new RangeError(`${this.literal} is not an integer literal`);
    return BigInt(this.literal);
  }

  /** The nearest float64: lossy for most decimals (`0.1`) and for large integers. */
  toNumber(): number {
    return Number(this.literal);
  }

  /**
   * A JSON number from a JS value: a `bigint`, a finite `number` (written as its shortest
   * round-trip form, `String(n)`, so `0.1` is `0.1`), a numeric literal string, or a JsonNumber.
   * Throws `RangeError` for anything else (NaN, Infinity, `"abc"`, `"1,5"`).
   */
  static from(value: JsonNumber | number | bigint | string): JsonNumber {
    if (value instanceof JsonNumber) return value;
    if (typeof value === "bigint") return new JsonNumber(value.toString());
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new RangeError(`${value} is not a JSON number`);
      return new JsonNumber(Object.is(value, -0) ? "0" : String(value));
    }
    return new JsonNumber(value);
  }
}

/** A parsed JSON value. Objects have no prototype, so a key like `__proto__` is an ordinary key. */
export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;
/** A parsed JSON object: own keys only, in first-seen order, each with its last value. */
export interface JsonObject {
  [key: string]: JsonValue;
}

/** Why a text is not JSON this contract accepts (the `invalid_json` reason code). */
export class JsonSyntaxError extends Error {
  override readonly name = "JsonSyntaxError";
  /** Index (UTF-16 units) in the decoded text where the problem was found. */
  readonly position: number;

  constructor(message: string, position: number) {
    super(`${message} (at ${position})`);
    this.position = position;
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of UTF-8 bytes; throws {@link JsonSyntaxError} when they are not UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new JsonSyntaxError("not valid UTF-8", 0);
  }
}

/**
 * Parse one JSON document (bytes are decoded as strict UTF-8 first). Throws
 * {@link JsonSyntaxError} for everything the module docstring lists; never anything else.
 */
export function parseJson(input: Uint8Array | string): JsonValue {
  const text = typeof input === "string" ? input : decodeUtf8(input);
  const parser = new Parser(text);
  const value = parser.document();
  if (parser.sawLoneSurrogate && holdsLoneSurrogate(value)) {
    throw new JsonSyntaxError("a string escapes a lone UTF-16 surrogate", 0);
  }
  return value;
}

/** Why `literal` is not a number this module accepts, or `null`. */
function numberProblem(literal: string): string | null {
  if (!NUMBER_LITERAL.test(literal)) return `${literal.slice(0, 40)} is not a JSON number`;
  if (INTEGER_LITERAL.test(literal)) {
    const digits = literal.startsWith("-") ? literal.length - 1 : literal.length;
    return digits > MAX_INTEGER_DIGITS
      ? `an integer of ${digits} digits exceeds the limit of ${MAX_INTEGER_DIGITS}`
      : null;
  }
  return null;
}

/** Why Python's `Decimal(literal)` refuses a (grammatical, non-integer) literal, or `null`. */
function decimalRangeProblem(literal: string): string | null {
  // Python's Decimal(literal): coefficient digits d (leading zeros dropped, "0" for zero),
  // exponent e = written exponent - fraction digits; refused when e + d - 1 > MAX_EMAX or
  // e < MIN_ETINY (decimal.InvalidOperation).
  const match = /^-?([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?$/.exec(literal);
  if (match === null) return `${literal.slice(0, 40)} is not a JSON number`;
  const whole = match[1] ?? "";
  const fraction = match[2] ?? "";
  const exponent = BigInt(match[3] ?? "0") - BigInt(fraction.length);
  const significant = (whole + fraction).replace(/^0+/, "");
  const adjusted = exponent + BigInt(Math.max(significant.length, 1)) - 1n;
  if (adjusted > DECIMAL_MAX_ADJUSTED || exponent < DECIMAL_MIN_EXPONENT) {
    return "a number outside the range of a decimal";
  }
  return null;
}

function holdsLoneSurrogate(root: JsonValue): boolean {
  const stack: JsonValue[] = [root];
  while (stack.length > 0) {
    const item = stack.pop() as JsonValue;
    if (typeof item === "string") {
      if (!item.isWellFormed()) return true;
    } else if (Array.isArray(item)) {
      stack.push(...item);
    } else if (item !== null && typeof item === "object" && !(item instanceof JsonNumber)) {
      for (const [key, value] of Object.entries(item)) {
        if (!key.isWellFormed()) return true;
        stack.push(value);
      }
    }
  }
  return false;
}

const ESCAPES: Record<string, string> = {
  '"': '"',
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

/** Recursive descent over the text; `depth` counts open arrays/objects. */
class Parser {
  private index = 0;
  private depth = 0;
  sawLoneSurrogate = false;

  constructor(private readonly text: string) {}

  document(): JsonValue {
    this.skipWhitespace();
    const value = this.value();
    this.skipWhitespace();
    if (this.index !== this.text.length) this.fail("extra data after the document");
    return value;
  }

  private fail(message: string): never {
    throw new JsonSyntaxError(message, this.index);
  }

  private skipWhitespace(): void {
    const text = this.text;
    let i = this.index;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
    this.index = i;
  }

  private value(): JsonValue {
    const c = this.text[this.index];
    switch (c) {
      case "{":
        return this.object();
      case "[":
        return this.array();
      case '"':
        return this.string();
      case "t":
        return this.literal("true", true);
      case "f":
        return this.literal("false", false);
      case "n":
        return this.literal("null", null);
      default:
        if (c === "-" || (c !== undefined && c >= "0" && c <= "9")) return this.number();
        return this.fail(c === undefined ? "expecting a value, got the end" : "expecting a value");
    }
  }

  private literal<T extends JsonValue>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.index)) this.fail("expecting a value");
    this.index += word.length;
    return value;
  }

  private enter(): void {
    this.depth++;
    if (this.depth > MAX_DEPTH) this.fail(`nested deeper than ${MAX_DEPTH} arrays/objects`);
    this.index++;
    this.skipWhitespace();
  }

  private object(): JsonObject {
    this.enter();
    const result = Object.create(null) as JsonObject;
    if (this.text[this.index] === "}") {
      this.index++;
      this.depth--;
      return result;
    }
    for (;;) {
      if (this.text[this.index] !== '"') this.fail("expecting a property name in double quotes");
      const key = this.string();
      this.skipWhitespace();
      if (this.text[this.index] !== ":") this.fail("expecting ':'");
      this.index++;
      this.skipWhitespace();
      result[key] = this.value(); // a duplicate key keeps its first position and its last value
      this.skipWhitespace();
      const c = this.text[this.index];
      this.index++;
      if (c === "}") break;
      if (c !== ",") this.fail("expecting ',' or '}'");
      this.skipWhitespace();
    }
    this.depth--;
    return result;
  }

  private array(): JsonValue[] {
    this.enter();
    const result: JsonValue[] = [];
    if (this.text[this.index] === "]") {
      this.index++;
      this.depth--;
      return result;
    }
    for (;;) {
      result.push(this.value());
      this.skipWhitespace();
      const c = this.text[this.index];
      this.index++;
      if (c === "]") break;
      if (c !== ",") this.fail("expecting ',' or ']'");
      this.skipWhitespace();
    }
    this.depth--;
    return result;
  }

  private string(): string {
    const text = this.text;
    let i = this.index + 1;
    let start = i;
    let out = "";
    for (;;) {
      const code = text.charCodeAt(i);
      if (Number.isNaN(code)) this.failAt(i, "unterminated string");
      if (code === 0x22) break;
      if (code < 0x20) this.failAt(i, "control character in a string");
      if (code !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(start, i);
      const escape = text[i + 1];
      if (escape === "u") {
        const unit = this.hex4(i + 2);
        i += 6;
        if (unit >= 0xd800 && unit <= 0xdbff && text[i] === "\\" && text[i + 1] === "u") {
          const low = this.hex4(i + 2);
          if (low >= 0xdc00 && low <= 0xdfff) {
            out += String.fromCharCode(unit, low);
            i += 6;
            start = i;
            continue;
          }
        }
        if (unit >= 0xd800 && unit <= 0xdfff) this.sawLoneSurrogate = true;
        out += String.fromCharCode(unit);
      } else {
        const replacement = escape === undefined ? undefined : ESCAPES[escape];
        if (replacement === undefined) this.failAt(i, "invalid escape");
        out += replacement;
        i += 2;
      }
      start = i;
    }
    this.index = i + 1;
    return out + text.slice(start, i);
  }

  private hex4(at: number): number {
    const digits = this.text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) this.failAt(at, "invalid \\uXXXX escape");
    return Number.parseInt(digits, 16);
  }

  private failAt(index: number, message: string): never {
    this.index = index;
    return this.fail(message);
  }

  private number(): JsonNumber {
    // Python's scanner: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? , where a "." or "e" not
    // followed by digits ends the number (and the next token then fails).
    const text = this.text;
    const start = this.index;
    let i = start;
    if (text[i] === "-") i++;
    if (text[i] === "0") i++;
    else if (isDigit(text[i]) && text[i] !== "0") while (isDigit(text[i])) i++;
    else this.failAt(i, "expecting a value");
    if (text[i] === "." && isDigit(text[i + 1])) {
      i += 2;
      while (isDigit(text[i])) i++;
    }
    if (text[i] === "e" || text[i] === "E") {
      let j = i + 1;
      if (text[j] === "+" || text[j] === "-") j++;
      if (isDigit(text[j])) {
        while (isDigit(text[j])) j++;
        i = j;
      }
    }
    const literal = text.slice(start, i);
    const problem = numberProblem(literal);
    if (problem !== null) this.failAt(start, problem);
    this.index = i;
    return new JsonNumber(literal);
  }
}

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "9";
}

/**
 * Compact JSON text of a value: a {@link JsonNumber} is written as its literal (exact), strings
 * are escaped as JSON requires (a lone surrogate as `\uXXXX`, which the decoder then refuses).
 * `undefined` properties are left out, as `JSON.stringify` does. Throws `TypeError` for values
 * that are not JSON (functions, symbols, non-finite numbers, class instances).
 */
export function stringifyJson(value: unknown): string {
  const parts: string[] = [];
  write(value, parts);
  return parts.join("");
}

function write(value: unknown, out: string[]): void {
  if (value === null) out.push("null");
  else if (value === true) out.push("true");
  else if (value === false) out.push("false");
  else if (typeof value === "string") out.push(quote(value));
  else if (value instanceof JsonNumber) out.push(value.literal);
  else if (typeof value === "number" || typeof value === "bigint") {
    out.push(JsonNumber.from(value).literal);
  } else if (Array.isArray(value)) {
    out.push("[");
    value.forEach((item: unknown, index) => {
      if (index > 0) out.push(",");
      write(item === undefined ? null : item, out);
    });
    out.push("]");
  } else if (typeof value === "object" && isPlainObject(value)) {
    out.push("{");
    let first = true;
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue;
      if (!first) out.push(",");
      first = false;
      out.push(quote(key), ":");
      write(item, out);
    }
    out.push("}");
  } else {
    throw new TypeError(`a ${describe(value)} is not a JSON value`);
  }
}

/** Whether `value` is an object literal (or a prototype-less object such as parsed JSON). */
export function isPlainObject(value: object): boolean {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || proto === Object.prototype;
}

function describe(value: unknown): string {
  if (typeof value !== "object" || value === null) return typeof value;
  return (value.constructor as { name?: string } | undefined)?.name ?? "object";
}

function quote(text: string): string {
  // JSON.stringify escapes quotes, backslashes, control characters and (ES2019) lone surrogates.
  return JSON.stringify(text);
}

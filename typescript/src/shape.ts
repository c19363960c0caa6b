/**
 * From what a TypeScript caller writes to the wire value the validators judge: numbers become
 * exact {@link JsonNumber}s, a `Date` where the contract wants an RFC 3339 string becomes one.
 * The generated shapes (`src/generated/contract.ts`) say which fields are numbers, so that a
 * decimal string (`"0.0012"`) is read as money only where the contract has money, and stays a
 * string everywhere else.
 */

import { formatRfc3339Micros } from "./formats.js";
import { JsonNumber, type JsonValue, isPlainObject } from "./json.js";

/** A number as the publisher accepts it: exact when given as a string, bigint or JsonNumber. */
export type NumberInput = number | bigint | string | JsonNumber;

/** The structure of a contract value, as far as conversion needs it. */
export type Shape =
  | { readonly kind: "object"; readonly properties: Readonly<Record<string, Shape>> }
  | { readonly kind: "array"; readonly items: Shape }
  | { readonly kind: "nullable"; readonly of: Shape }
  | { readonly kind: "integer" | "number" | "string" | "date-time" };

/** A value the caller passed that cannot be a JSON value at all (named by `field`). */
export class ConversionError extends Error {
  override readonly name = "ConversionError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

/**
 * The wire value of `value` for `shape`. Numbers where the shape has a number: a `number` must be
 * finite (an integer field also wants a safe integer: a larger one has already lost digits, pass
 * a bigint or a string), a `string` must be a JSON number literal (`"0.1"`, `"1E+400"`; else it
 * is left as the string, which validation then refuses, naming the field). Anywhere else numbers
 * are written `String(n)` and strings stay strings. `undefined` properties are left out.
 */
export function toWire(value: unknown, shape: Shape | undefined, field: string): JsonValue {
  if (value === null) return null;
  if (shape?.kind === "nullable") return toWire(value, shape.of, field);
  if (shape?.kind === "integer" || shape?.kind === "number") {
    if (typeof value === "number" && shape.kind === "integer" && !Number.isSafeInteger(value) && Number.isInteger(value)) {
      throw new ConversionError(field, `${value} is beyond 2^53: pass a bigint or a string to keep every digit`);
    }
    if (typeof value === "string") {
      try {
        return new JsonNumber(value);
      } catch {
        return value; // not a number literal: validation names it
      }
    }
  }
  if (shape?.kind === "date-time" && value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new ConversionError(field, "an invalid Date");
    return formatRfc3339Micros(BigInt(value.getTime()) * 1000n);
  }
  if (typeof value === "string" || typeof value === "boolean") return value;
  if (value instanceof JsonNumber) return value;
  if (typeof value === "number" || typeof value === "bigint") {
    try {
      return JsonNumber.from(value);
    } catch {
      throw new ConversionError(field, `${String(value)} is not a JSON number`);
    }
  }
  if (Array.isArray(value)) {
    const items = shape?.kind === "array" ? shape.items : undefined;
    return value.map((item: unknown, index) => toWire(item === undefined ? null : item, items, `${field}[${index}]`));
  }
  if (typeof value === "object" && isPlainObject(value)) {
    const properties = shape?.kind === "object" ? shape.properties : undefined;
    const out = Object.create(null) as Record<string, JsonValue>;
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue;
      out[key] = toWire(item, properties?.[key], field ? `${field}.${key}` : key);
    }
    return out;
  }
  throw new ConversionError(field, `a ${typeof value === "object" ? "class instance" : typeof value} is not a JSON value`);
}

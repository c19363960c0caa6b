/**
 * The Zod building blocks the generated validators (`src/generated/contract.ts`) are made of:
 * one per JSON Schema construct the exported schemas use, each with the Python reference's
 * meaning rather than JavaScript's. Values are those {@link parseJson} builds: numbers are
 * {@link JsonNumber} (an integer is an integer literal: `1.0` is not one), strings are measured
 * in code points, booleans are never numbers, strings are never numbers.
 *
 * Validators only judge; callers keep the value they passed (unknown fields included, never
 * dropped or rewritten), which is why every object schema here is loose.
 */

import { z } from "zod";

import { compareDecimals, toDecimal } from "./decimal.js";
import { codePointLength, isRealInstant } from "./formats.js";
import { JsonNumber, type JsonObject, type JsonValue, isPlainObject } from "./json.js";

/** The JSON name of a value's type, for messages ("got string"). */
export function jsonKind(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "string") return "string";
  if (value instanceof JsonNumber) return value.isInteger ? "integer" : "number";
  if (typeof value === "number" || typeof value === "bigint") return "a JavaScript number";
  if (Array.isArray(value)) return "array";
  if (isJsonObject(value)) return "object";
  return typeof value;
}

/** Whether `value` is a JSON object (a plain or prototype-less object; not a JsonNumber). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value) && isPlainObject(value);
}

/** A Zod schema of one value judged by `problem` (a message, or null when the value is fine). */
function leaf<T>(problem: (value: unknown) => string | null): z.ZodType<T> {
  return z.custom<T>().superRefine((value, ctx) => {
    const message = value === undefined ? "Field required" : problem(value);
    if (message !== null) ctx.addIssue({ code: "custom", message, input: value });
  });
}

export interface NumberBounds {
  /** Inclusive lower bound, as a JSON number literal. */
  readonly minimum?: string;
  /** Exclusive lower bound, as a JSON number literal. */
  readonly exclusiveMinimum?: string;
  /** The one allowed value, as a JSON number literal. */
  readonly const?: string;
}

function boundsProblem(value: JsonNumber, bounds: NumberBounds): string | null {
  const exact = toDecimal(value);
  if (bounds.const !== undefined && compareDecimals(exact, toDecimal(new JsonNumber(bounds.const))) !== 0) {
    return `Input should be ${bounds.const}`;
  }
  if (bounds.minimum !== undefined && compareDecimals(exact, toDecimal(new JsonNumber(bounds.minimum))) < 0) {
    return `Input should be greater than or equal to ${bounds.minimum}`;
  }
  if (
    bounds.exclusiveMinimum !== undefined &&
    compareDecimals(exact, toDecimal(new JsonNumber(bounds.exclusiveMinimum))) <= 0
  ) {
    return `Input should be greater than ${bounds.exclusiveMinimum}`;
  }
  return null;
}

/** JSON Schema `"type": "integer"`: an integer literal (not `1.0`, not `true`, not `"1"`). */
export function integerSchema(bounds: NumberBounds = {}): z.ZodType<JsonNumber> {
  return leaf<JsonNumber>((value) => {
    if (!(value instanceof JsonNumber) || !value.isInteger) {
      return `Input should be an integer, got ${jsonKind(value)}`;
    }
    return boundsProblem(value, bounds);
  });
}

/** JSON Schema `"type": "number"`: any JSON number, exact (money). */
export function numberSchema(bounds: NumberBounds = {}): z.ZodType<JsonNumber> {
  return leaf<JsonNumber>((value) => {
    if (!(value instanceof JsonNumber)) {
      return `Input should be a JSON number (never a string or boolean), got ${jsonKind(value)}`;
    }
    if (!value.isExactDecimal) return "Input should be a number an exact decimal can hold";
    return boundsProblem(value, bounds);
  });
}

export interface StringBounds {
  readonly minLength?: number;
  readonly maxLength?: number;
  /** An ECMA-262 pattern (JSON Schema's dialect), matched against the whole string. */
  readonly pattern?: string;
  /** `date-time` (a real instant, as Python reads it) or `uuid` (the pattern decides). */
  readonly format?: "date-time" | "uuid";
  /** The allowed values (JSON Schema `enum`). */
  readonly enum?: readonly string[];
}

/** JSON Schema `"type": "string"`, lengths in code points. */
export function stringSchema<T extends string = string>(bounds: StringBounds = {}): z.ZodType<T> {
  const pattern = bounds.pattern === undefined ? undefined : new RegExp(bounds.pattern, "u");
  return leaf<T>((value) => {
    if (typeof value !== "string") return `Input should be a string, got ${jsonKind(value)}`;
    if (bounds.enum !== undefined && !bounds.enum.includes(value)) {
      return `Input should be one of ${bounds.enum.join(", ")}`;
    }
    if (bounds.minLength !== undefined || bounds.maxLength !== undefined) {
      const length = codePointLength(value);
      if (bounds.minLength !== undefined && length < bounds.minLength) {
        return `String should have at least ${bounds.minLength} characters`;
      }
      if (bounds.maxLength !== undefined && length > bounds.maxLength) {
        return `String should have at most ${bounds.maxLength} characters`;
      }
    }
    if (pattern !== undefined && !pattern.test(value)) {
      return bounds.format === "date-time"
        ? "Input should be an RFC 3339 date-time with offset, like 2026-01-31T12:00:00.000Z"
        : bounds.format === "uuid"
          ? "Input should be a UUID like 0b8a3f9c-52a4-4c1e-9d0f-2f1e4e6b7a10"
          : `String should match ${bounds.pattern}`;
    }
    if (bounds.format === "date-time" && !isRealInstant(value)) {
      return "Input should be a valid date and time in the Gregorian calendar";
    }
    return null;
  });
}

/** `anyOf: [X, {"type": "null"}]`. */
export function nullable<T>(schema: z.ZodType<T>): z.ZodType<T | null> {
  return z.custom<T | null>().superRefine((value, ctx) => {
    if (value === null) return;
    const result = schema.safeParse(value);
    if (!result.success) {
      for (const issue of result.error.issues) {
        ctx.addIssue({ code: "custom", message: issue.message, path: [...issue.path], input: value });
      }
    }
  });
}

/** `"type": "array"` with `items` (and `uniqueItems`: no value twice). */
export function arraySchema<T>(items: z.ZodType<T>, options: { uniqueItems?: boolean } = {}): z.ZodType<T[]> {
  const array = z.array(items, { error: (issue) => `Input should be an array, got ${jsonKind(issue.input)}` });
  if (!options.uniqueItems) return array;
  return array.superRefine((values, ctx) => {
    const seen = new Set<string>();
    for (const item of values) {
      const key = typeof item === "string" ? `s${item}` : `j${JSON.stringify(item)}`;
      if (seen.has(key)) {
        const shown = JSON.stringify(item).slice(0, 60);
        ctx.addIssue({ code: "custom", message: `Items should be distinct; ${shown} appears more than once`, input: values });
        return;
      }
      seen.add(key);
    }
  });
}

/**
 * `"type": "object"` with `properties`, `required` and `additionalProperties: true`: unknown
 * fields are allowed (and kept by the caller, who keeps its own value).
 */
export function objectSchema<T extends object = JsonObject>(
  properties: Record<string, z.ZodType<unknown>>,
  required: readonly string[],
): z.ZodType<T> {
  const shape: Record<string, z.ZodType<unknown>> = {};
  for (const [name, schema] of Object.entries(properties)) {
    shape[name] = required.includes(name) ? schema : schema.optional();
  }
  const object = z.looseObject(shape);
  return z
    .custom<T>()
    .superRefine((value, ctx) => {
      if (value === undefined) ctx.addIssue({ code: "custom", message: "Field required", input: value });
      else if (!isJsonObject(value)) {
        ctx.addIssue({ code: "custom", message: `Input should be an object, got ${jsonKind(value)}`, input: value });
      } else {
        const result = object.safeParse(value);
        if (!result.success) {
          for (const issue of result.error.issues) {
            ctx.addIssue({ code: "custom", message: issue.message, path: [...issue.path], input: value });
          }
        }
      }
    });
}

/** The first problem Zod found, as `path: message` with the path in the reference's form. */
export function describeIssue(issue: z.core.$ZodIssue, prefix: string): { field: string; message: string } {
  let field = prefix;
  for (const part of issue.path) {
    if (typeof part === "number") field += `[${part}]`;
    else field = field ? `${field}.${String(part)}` : String(part);
  }
  return { field: field || "(root)", message: issue.message };
}

/** Values the validators accept (re-exported for the generated file's types). */
export type { JsonNumber, JsonObject, JsonValue };

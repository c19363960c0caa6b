/**
 * The conformance corpus (`schemas/conformance/`) judged by the TypeScript decoder: for every
 * case, exactly the manifest's verdict, reason code and event type. The Python reference and the
 * consumer's decoder are held to the same manifest by `tests/test_conformance.py`; a case added
 * to the corpus is checked here without any change to this file.
 */

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { decodeEvent } from "../src/index.js";

interface Case {
  readonly verdict: "valid" | "rejected";
  readonly reason: string | null;
  readonly type: string | null;
  readonly max_bytes?: number;
  readonly note: string;
}

const corpus = resolve(dirname(fileURLToPath(import.meta.url)), "../../schemas/conformance");
const cases = (JSON.parse(readFileSync(join(corpus, "verdicts.json"), "utf8")) as { cases: Record<string, Case> }).cases;

test("every record has a verdict and every verdict a record", () => {
  const records = readdirSync(join(corpus, "records"))
    .filter((name) => name.endsWith(".bin"))
    .map((name) => name.slice(0, -4))
    .sort();
  assert.deepEqual(records, Object.keys(cases).sort());
  assert.ok(records.length >= 80, `only ${records.length} cases`);
});

for (const [name, expected] of Object.entries(cases)) {
  test(`corpus: ${name} (${expected.note})`, () => {
    const value = readFileSync(join(corpus, "records", `${name}.bin`));
    const result = decodeEvent(value, expected.max_bytes === undefined ? {} : { maxBytes: expected.max_bytes });
    const got = result.ok
      ? { verdict: "valid", reason: null, type: result.type }
      : { verdict: "rejected", reason: result.reason, type: result.eventType };
    assert.deepEqual(got, { verdict: expected.verdict, reason: expected.reason, type: expected.type }, result.ok ? "" : result.message);
  });
}

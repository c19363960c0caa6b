/**
 * `src/generated/contract.ts` is what the generator makes of the committed JSON Schema
 * (`../schemas/json/`, itself checked against the Python models by `tests/test_schemas_export.py`):
 * a bound changed in `schemas/` without `npm run generate` fails here.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { generateContract } from "../scripts/codegen.js";
import { DEFAULT_SCHEMA_DIR, GENERATED_FILE, readSchemas } from "../scripts/generate.js";

test("the generated contract is up to date with schemas/json (else: npm run generate)", () => {
  const expected = generateContract(readSchemas(DEFAULT_SCHEMA_DIR));
  assert.equal(readFileSync(GENERATED_FILE, "utf8"), expected);
});

test("a changed bound in the schema changes the generated validators", () => {
  const files = readSchemas(DEFAULT_SCHEMA_DIR);
  const envelope = JSON.parse(files["envelope.schema.json"] as string);
  envelope.properties.tenantId.maxLength = 64;
  const changed = generateContract({ ...files, "envelope.schema.json": JSON.stringify(envelope) });
  assert.match(changed, /tenantId: stringSchema\(\{ minLength: 1, maxLength: 64 \}\)/);
  assert.notEqual(changed, readFileSync(GENERATED_FILE, "utf8"));
});

test("a construct the generator does not know is refused, naming where", () => {
  const files = readSchemas(DEFAULT_SCHEMA_DIR);
  const envelope = JSON.parse(files["envelope.schema.json"] as string);
  envelope.$defs.ProviderModel.properties.model.maxItems = 3;
  const snapshot = JSON.parse(files["routing-plan-snapshot.schema.json"] as string);
  snapshot.$defs.ProviderModel.properties.model.maxItems = 3;
  const changed = {
    ...files,
    "envelope.schema.json": JSON.stringify(envelope),
    "routing-plan-snapshot.schema.json": JSON.stringify(snapshot),
  };
  assert.throws(
    () => generateContract(changed),
    /unsupported JSON Schema at #\/\$defs\/ProviderModel\/properties\/model: keyword "maxItems"/,
  );
});

test("a payload file that differs from the envelope's embedded copy is refused", () => {
  const files = readSchemas(DEFAULT_SCHEMA_DIR);
  const cost = JSON.parse(files["actual-cost.schema.json"] as string);
  cost.properties.provider.minLength = 2;
  assert.throws(
    () => generateContract({ ...files, "actual-cost.schema.json": JSON.stringify(cost) }),
    /actual-cost.schema.json differs from envelope.schema.json/,
  );
});

/**
 * `npm run generate [-- SCHEMA_DIR]`: regenerate `src/generated/contract.ts` from the JSON Schema
 * files (default `../schemas/json`, the committed output of `routing-persistence schemas export`).
 */

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { SCHEMA_FILES, generateContract } from "./codegen.js";

const here = dirname(fileURLToPath(import.meta.url));
/** Where the schemas are read from and the generated file is written to. */
export const DEFAULT_SCHEMA_DIR = resolve(here, "../../schemas/json");
export const GENERATED_FILE = resolve(here, "../src/generated/contract.ts");

/** The schema files' texts in `directory`, keyed by file name. */
export function readSchemas(directory: string): Record<string, string> {
  return Object.fromEntries(SCHEMA_FILES.map((name) => [name, readFileSync(join(directory, name), "utf8")]));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const directory = resolve(process.argv[2] ?? DEFAULT_SCHEMA_DIR);
  writeFileSync(GENERATED_FILE, generateContract(readSchemas(directory)));
  console.log(`wrote ${GENERATED_FILE} from ${directory}`);
}

/**
 * `npm run prisma:generate`: generate the Prisma Client 7 the tests use (playing Project A and
 * the routing engine) from `../deploy/prisma/example.schema.prisma`, the example owners' schema
 * with routing-persistence's fragment pasted in.
 *
 * The schema is copied to `.prisma-client/schema.prisma` (ignored) with the client's output set
 * to `.prisma-client/client`, inside this package so the client finds `@prisma/client`'s runtime.
 * Prisma's CLI wants its schema-engine binary even for commands that never run it (validate,
 * format, generate), and that binary is downloaded from outside the npm registry, which this
 * project's machines cannot reach: `PRISMA_SCHEMA_ENGINE_BINARY` points it at a stand-in that
 * refuses to run (it is never called; `prisma migrate` would need the real one).
 */

import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const PACKAGE_DIR = resolve(here, "..");
export const PRISMA_DIR = resolve(PACKAGE_DIR, "../deploy/prisma");
export const FRAGMENT = join(PRISMA_DIR, "routing-persistence.prisma");
export const EXAMPLE = join(PRISMA_DIR, "example.schema.prisma");
export const CLIENT_DIR = join(PACKAGE_DIR, ".prisma-client");

/** The environment for Prisma's CLI, with the stand-in schema engine. */
export function prismaEnv(): NodeJS.ProcessEnv {
  mkdirSync(CLIENT_DIR, { recursive: true });
  const standIn = join(CLIENT_DIR, "schema-engine-stand-in");
  writeFileSync(standIn, '#!/bin/sh\necho "schema-engine: a stand-in (not available offline)" >&2\nexit 1\n');
  chmodSync(standIn, 0o755);
  return { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: process.env["PRISMA_SCHEMA_ENGINE_BINARY"] ?? standIn, PRISMA_HIDE_UPDATE_MESSAGE: "1" };
}

/** Run Prisma's CLI; returns its output, throws with it on failure. */
export function prisma(...args: string[]): string {
  return execFileSync(join(PACKAGE_DIR, "node_modules/.bin/prisma"), args, {
    cwd: PACKAGE_DIR,
    env: prismaEnv(),
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** The fragment's blocks (BEGIN..END lines), keyed by model. */
export function fragmentBlocks(text: string): Map<string, string> {
  const blocks = new Map<string, string>();
  for (const match of text.matchAll(/^ *\/\/ BEGIN routing-persistence (\w+)\n[\s\S]*?^ *\/\/ END routing-persistence \1\n/gm)) {
    blocks.set(match[1] as string, match[0]);
  }
  return blocks;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const example = readFileSync(EXAMPLE, "utf8");
  for (const [model, block] of fragmentBlocks(readFileSync(FRAGMENT, "utf8"))) {
    if (!example.includes(block)) throw new Error(`example.schema.prisma does not hold the fragment's ${model} block verbatim`);
  }
  const schema = join(CLIENT_DIR, "schema.prisma");
  mkdirSync(CLIENT_DIR, { recursive: true });
  writeFileSync(schema, example.replace('output   = "./generated"', 'output   = "./client"'));
  process.stdout.write(prisma("generate", "--schema", schema));
}

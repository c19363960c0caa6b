/**
 * The real Python service, as a process: `routing-persistence migrate` and `run` from the
 * repository's `.venv` (`make venv`), configured only by `ROUTING_*` variables.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";

import type { Topics } from "./kafka.js";
import { unique } from "./kafka.js";
import { REPO, freePort } from "./stack.js";

const run = promisify(execFile);
/** The console script (override with `ROUTING_PERSISTENCE_BIN`). */
export const SERVICE_BIN = process.env["ROUTING_PERSISTENCE_BIN"] ?? resolve(REPO, ".venv/bin/routing-persistence");

/** `routing-persistence migrate` against `databaseUrl`; throws with its output unless it exits 0. */
export async function migrate(databaseUrl: string): Promise<void> {
  await run(SERVICE_BIN, ["migrate"], { env: { ...process.env, ROUTING_DATABASE_URL: databaseUrl }, timeout: 120_000 });
}

export interface ServiceConfig {
  readonly bootstrap: string;
  readonly databaseUrl: string;
  readonly topics: Topics;
  /** Extra `ROUTING_*` variables. */
  readonly env?: Readonly<Record<string, string>>;
}

/** A running `routing-persistence run`. */
export class RunningService {
  private output = "";
  private readonly exited: Promise<number | null>;

  private constructor(
    private readonly child: ChildProcess,
    readonly metricsPort: number,
  ) {
    child.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  }

  /** Start the service on the test's topics and database; resolves once `/readyz` says 200. */
  static async start(config: ServiceConfig): Promise<RunningService> {
    const metricsPort = await freePort();
    const child = spawn(SERVICE_BIN, ["run"], {
      env: {
        ...process.env,
        ROUTING_KAFKA_BOOTSTRAP_SERVERS: config.bootstrap,
        ROUTING_DATABASE_URL: config.databaseUrl,
        ROUTING_GROUP_ID: unique("ts-group"),
        ROUTING_TOPIC_SNAPSHOTS: config.topics.snapshots,
        ROUTING_TOPIC_COSTS: config.topics.costs,
        ROUTING_TOPIC_POLICIES: config.topics.policies,
        ROUTING_TOPIC_DLQ: config.topics.dlq,
        ROUTING_METRICS_PORT: String(metricsPort),
        ROUTING_BATCH_TIMEOUT_MS: "100",
        ROUTING_LOG_FORMAT: "json",
        ...config.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const service = new RunningService(child, metricsPort);
    await service.waitReady();
    return service;
  }

  /** What the process printed (for assertion messages). */
  get log(): string {
    return this.output.slice(-4000);
  }

  private async waitReady(timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null) throw new Error(`routing-persistence exited ${this.child.exitCode}:\n${this.log}`);
      try {
        const response = await fetch(`http://127.0.0.1:${this.metricsPort}/readyz`);
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`routing-persistence not ready after ${timeoutMs} ms:\n${this.log}`);
  }

  /**
   * The sum of the samples of `name` whose labels include `labels`, from `/metrics` (label
   * order in the exposition does not matter).
   */
  async metricSum(name: string, labels: Readonly<Record<string, string>> = {}): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (match === null || match[1] !== name) continue;
      const found = new Map([...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
      if (Object.entries(labels).every(([k, v]) => found.get(k) === v)) sum += Number(match[3]);
    }
    return sum;
  }

  /** SIGTERM, then the exit code (the service finishes its batch and exits 0). */
  async stop(timeoutMs = 60_000): Promise<number | null> {
    if (this.child.exitCode === null) this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * A private instance of `deploy/local/stack` that one test owns and may stop at will (its own
 * directory and ports), so a broker outage never touches the shared stack other tests use.
 */

import { execFile } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { unique } from "./kafka.js";

const run = promisify(execFile);
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const STACK = resolve(REPO, "deploy/local/stack");

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

export class PrivateStack {
  private constructor(
    readonly directory: string,
    readonly kafkaPort: number,
    readonly controllerPort: number,
    readonly pgPort: number,
  ) {}

  static async create(): Promise<PrivateStack> {
    const directory = resolve(REPO, ".local/tests", unique("ts-stack"));
    mkdirSync(directory, { recursive: true });
    return new PrivateStack(directory, await freePort(), await freePort(), await freePort());
  }

  get kafkaBootstrap(): string {
    return `127.0.0.1:${this.kafkaPort}`;
  }

  private async stack(...args: string[]): Promise<void> {
    await run(STACK, args, {
      env: {
        ...process.env,
        ROUTING_STACK_DIR: this.directory,
        ROUTING_STACK_KAFKA_PORT: String(this.kafkaPort),
        ROUTING_STACK_KAFKA_CONTROLLER_PORT: String(this.controllerPort),
        ROUTING_STACK_PG_PORT: String(this.pgPort),
        ROUTING_STACK_KAFKA_HEAP: "384m",
      },
      timeout: 180_000,
    });
  }

  /** Start `kafka` or `postgres` and wait until it accepts connections. */
  up(service: "kafka" | "postgres"): Promise<void> {
    return this.stack("up", service);
  }

  /** Stop it (a clean shutdown, as an operator's). */
  down(service: "kafka" | "postgres" | "all" = "all"): Promise<void> {
    return this.stack("down", service);
  }

  /** Stop everything and delete the directory. */
  async destroy(): Promise<void> {
    try {
      await this.down("all");
    } finally {
      rmSync(this.directory, { recursive: true, force: true });
    }
  }
}

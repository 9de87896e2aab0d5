import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Builds the operator page's browser modules (dist/web) when they are stale.
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration files each start their own nats-server; two cores do not like more in parallel.
    maxWorkers: 2,
    fileParallelism: true,
    reporters: ["default", "./test/summary-reporter.ts"],
  },
});

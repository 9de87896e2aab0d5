/**
 * The BullMQ baseline of the benchmark: a BullMQ Worker doing the same call as the proxy and
 * the raw baseline (openai SDK with its defaults, the prompt as one user message) and
 * returning the assistant's text, which BullMQ stores as the job's return value and announces
 * with a `completed` event. Run by bench/run.ts as a child process, measured from /proc.
 *
 * Environment: REDIS_PORT, QUEUE (default "bench"), OPENAI_BASE_URL, OPENAI_API_KEY,
 * CONCURRENCY (default 64), BENCH_IOREDIS (where to import ioredis from; see services.ts).
 */
import { Worker, type Job } from "bullmq";
import OpenAI from "openai";
import { importIORedis, redisClient } from "./lib/services.js";

const Redis = await importIORedis(process.env.BENCH_IOREDIS ?? "ioredis");
const connection = redisClient(Redis, Number(process.env.REDIS_PORT ?? 6379));
const openai = new OpenAI({
  apiKey: process.env.OPENAI_API_KEY ?? "x",
  baseURL: process.env.OPENAI_BASE_URL,
});
const model = process.env.OPENAI_MODEL ?? "gpt-4o-mini";

const worker = new Worker(
  process.env.QUEUE ?? "bench",
  async (job: Job<{ prompt: string }>) => {
    const c = await openai.chat.completions.create({
      model,
      messages: [{ role: "user", content: job.data.prompt }],
    });
    return c.choices[0]?.message.content ?? "";
  },
  {
    connection,
    concurrency: Number(process.env.CONCURRENCY ?? 64),
  },
);
worker.on("error", (e) => process.stderr.write(`bullmq worker error: ${String(e)}\n`));

process.once("SIGTERM", () => {
  process.exit(0);
});

import type OpenAI from "openai";
import { describe, expect, it } from "vitest";
import { Accumulator } from "../../src/llm/openai-client.js";

type Chunk = OpenAI.ChatCompletionChunk;
type Delta = Chunk["choices"][number]["delta"];

function chunk(
  choices: {
    index?: number;
    delta: Delta;
    finish_reason?: Chunk["choices"][number]["finish_reason"];
  }[],
  extra: Partial<Chunk> = {},
): Chunk {
  return {
    id: "chatcmpl-abc",
    object: "chat.completion.chunk",
    created: 1_700_000_000,
    model: "gpt-4o-mini-2024-07-18",
    system_fingerprint: "fp_1",
    choices: choices.map((c) => ({
      index: c.index ?? 0,
      delta: c.delta,
      finish_reason: c.finish_reason ?? null,
      logprobs: null,
    })),
    ...extra,
  };
}

describe("Accumulator", () => {
  it("folds a content stream into one ChatCompletion", () => {
    const acc = new Accumulator();
    acc.add(chunk([{ delta: { role: "assistant", content: "" } }]));
    acc.add(chunk([{ delta: { content: "Hel" } }]));
    acc.add(chunk([{ delta: { content: "lo, " } }]));
    acc.add(chunk([{ delta: { content: "world" } }]));
    acc.add(chunk([{ delta: {}, finish_reason: "length" }]));
    acc.add(chunk([], { usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } }));
    const c = acc.result("fallback-model");
    expect(c).toEqual({
      id: "chatcmpl-abc",
      object: "chat.completion",
      created: 1_700_000_000,
      model: "gpt-4o-mini-2024-07-18",
      system_fingerprint: "fp_1",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hello, world", refusal: null },
          logprobs: null,
          finish_reason: "length",
        },
      ],
      usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 },
    });
  });

  it("defaults finish_reason to stop, usage to null and model to the fallback", () => {
    const acc = new Accumulator();
    acc.add(chunk([{ delta: { content: "x" } }], { model: "", usage: null }));
    const c = acc.result("fallback-model");
    expect(c.model).toBe("fallback-model");
    expect(c.usage).toBeNull();
    expect(c.choices).toEqual([expect.objectContaining({ finish_reason: "stop" })]);
  });

  it("keeps the first id and model", () => {
    const acc = new Accumulator();
    acc.add(chunk([{ delta: { content: "a" } }], { id: "first", model: "m1" }));
    acc.add(chunk([{ delta: { content: "b" } }], { id: "second", model: "m2" }));
    const c = acc.result("fb");
    expect(c.id).toBe("first");
    expect(c.model).toBe("m1");
  });

  it("keeps choices apart by index and in order", () => {
    const acc = new Accumulator();
    acc.add(
      chunk([
        { index: 1, delta: { content: "B1" } },
        { index: 0, delta: { content: "A1" } },
      ]),
    );
    acc.add(
      chunk([
        { index: 0, delta: { content: "A2" } },
        { index: 1, delta: { content: "B2" } },
      ]),
    );
    const c = acc.result("fb");
    expect(c.choices?.map((x) => x.message?.content)).toEqual(["A1A2", "B1B2"]);
  });

  it("concatenates tool_call deltas by index", () => {
    const acc = new Accumulator();
    acc.add(
      chunk([
        {
          delta: {
            role: "assistant",
            tool_calls: [
              {
                index: 0,
                id: "call_1",
                type: "function",
                function: { name: "get_", arguments: "" },
              },
            ],
          },
        },
      ]),
    );
    acc.add(
      chunk([
        { delta: { tool_calls: [{ index: 0, function: { name: "weather", arguments: '{"ci' } }] } },
      ]),
    );
    acc.add(
      chunk([
        {
          delta: {
            tool_calls: [
              {
                index: 1,
                id: "call_2",
                type: "function",
                function: { name: "now", arguments: "{}" },
              },
            ],
          },
        },
      ]),
    );
    acc.add(
      chunk([{ delta: { tool_calls: [{ index: 0, function: { arguments: 'ty":"Oslo"}' } }] } }]),
    );
    acc.add(chunk([{ delta: {}, finish_reason: "tool_calls" }]));
    const c = acc.result("fb");
    const choice = (c.choices as { message: Record<string, unknown>; finish_reason: string }[])[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    expect(choice.message.tool_calls).toEqual([
      {
        id: "call_1",
        type: "function",
        function: { name: "get_weather", arguments: '{"city":"Oslo"}' },
      },
      { id: "call_2", type: "function", function: { name: "now", arguments: "{}" } },
    ]);
  });

  it("has no tool_calls key when none were streamed", () => {
    const acc = new Accumulator();
    acc.add(chunk([{ delta: { content: "hi" } }]));
    const choice = (acc.result("fb").choices as { message: Record<string, unknown> }[])[0]!;
    expect("tool_calls" in choice.message).toBe(false);
  });
});

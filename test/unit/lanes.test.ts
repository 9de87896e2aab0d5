import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { deriveDefinitions, lanesOf } from "../../src/nats/lanes.js";
import { tenantsMetadata } from "../../src/nats/tenants.js";
import { parseRequestSubject } from "../../src/protocol/lanes.js";
import { diff } from "../../src/nats/streams.js";

const P = "openai.requests";

describe("request subjects", () => {
  it("reads tenant, priority and id, and the plain subject as default/normal", () => {
    expect(parseRequestSubject(P, "openai.requests.acme.high.r1")).toEqual({
      tenant: "acme",
      priority: "high",
      id: "r1",
      legacy: false,
    });
    expect(parseRequestSubject(P, "openai.requests.r2")).toEqual({
      tenant: "default",
      priority: "normal",
      id: "r2",
      legacy: true,
    });
  });

  it("names what is wrong with a bad subject", () => {
    expect(parseRequestSubject(P, "openai.requests.acme.urgent.r1")).toMatch(
      /priority "urgent" must be one of high, normal, low/,
    );
    expect(parseRequestSubject(P, "openai.requests.a.b")).toMatch(/<tenant>\.<priority>\.<id>/);
    expect(parseRequestSubject(P, "openai.requests.acme.low.bad%id")).toMatch(/request id/);
    expect(parseRequestSubject(P, "other.x")).toMatch(/not under openai\.requests/);
  });
});

describe("lanes from the configuration", () => {
  const tenants = { default: { weight: 1 }, acme: { weight: 2 } };
  const weights = { high: { weight: 8 }, normal: { weight: 4 }, low: { weight: 1 } };
  const names = {
    stream: "OPENAI_REQUESTS",
    prefix: P,
    consumerBase: "openai-proxy",
    poisonStream: "OPENAI_POISON",
  };
  const lanes = lanesOf(tenants, weights, names);

  it("has a lane per tenant and priority, highest priority first, the plain subject on default/normal", () => {
    expect(lanes.map((l) => l.consumer)).toEqual([
      "openai-proxy-default-high",
      "openai-proxy-acme-high",
      "openai-proxy-default-normal",
      "openai-proxy-acme-normal",
      "openai-proxy-default-low",
      "openai-proxy-acme-low",
    ]);
    expect(lanes[2]!.filters).toEqual(["openai.requests.*", "openai.requests.default.normal.*"]);
    expect(lanes[1]).toMatchObject({ priorityWeight: 8, tenantWeight: 2 });
  });

  it("derives the stream's subjects, the lane consumers from the template, and the advisory subject", () => {
    const defs = deriveDefinitions(
      {
        streams: [
          { name: "OPENAI_REQUESTS", subjects: ["openai.requests.>"] },
          { name: "OPENAI_POISON", subjects: ["x"] },
        ],
        consumers: [
          {
            stream_name: "OPENAI_REQUESTS",
            config: { durable_name: "openai-proxy", max_deliver: 5, filter_subject: "old" },
          },
        ],
      },
      lanes,
      names,
      tenantsMetadata(tenants, "openai-proxy"),
    );
    const req = defs.streams.find((s) => s.name === "OPENAI_REQUESTS")!;
    expect(req.subjects).toContain("openai.requests.acme.low.*");
    expect(req.subjects).not.toContain("openai.requests.>");
    expect(JSON.parse(req.metadata!["nats-openai-proxy.tenants"]!)).toEqual(tenants);
    expect(defs.streams.find((s) => s.name === "OPENAI_POISON")!.subjects).toEqual([
      "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.OPENAI_REQUESTS.*",
    ]);
    expect(defs.consumers).toHaveLength(6);
    const normal = defs.consumers.find(
      (c) => c.config.durable_name === "openai-proxy-default-normal",
    )!;
    expect(normal.config).toMatchObject({
      max_deliver: 5,
      filter_subjects: ["openai.requests.*", "openai.requests.default.normal.*"],
    });
    expect(normal.config.filter_subject).toBeUndefined();
  });

  it("compares only the metadata keys it sets (the server adds its own)", () => {
    expect(diff({ metadata: { a: "1" } }, { metadata: { a: "1", "_nats.ver": "2.15.1" } })).toEqual(
      [],
    );
    expect(diff({ metadata: { a: "2" } }, { metadata: { a: "1" } })).toHaveLength(1);
  });
});

describe("tenants and lanes configuration", () => {
  const load = (env: Record<string, string>) =>
    loadConfig({ defaultFile: "/no/such/file.yaml", env }).config;

  it("always has the default tenant and the default weights", () => {
    const c = load({ PROXY_TENANTS: '{"acme":{"weight":2,"max_concurrency":16}}' });
    expect(c.tenants).toEqual({
      acme: { weight: 2, max_concurrency: 16 },
      default: { weight: 1 },
    });
    expect(c.lanes).toEqual({ high: { weight: 8 }, normal: { weight: 4 }, low: { weight: 1 } });
  });

  it("refuses a bad tenant name, an unknown key and a bad limit, naming the key", () => {
    expect(() => load({ PROXY_TENANTS: '{"a.b":{}}' })).toThrow(/tenant "a\.b" must be/);
    expect(() => load({ PROXY_TENANTS: '{"acme":{"rpmm":1}}' })).toThrow(
      /unknown key "tenants\.acme\.rpmm"/,
    );
    expect(() => load({ PROXY_TENANTS: '{"acme":{"max_queued":1.5}}' })).toThrow(
      /"tenants\.acme\.max_queued" must be a positive integer/,
    );
    expect(() => load({ PROXY_LANES: '{"urgent":{"weight":1}}' })).toThrow(
      /unknown lane "lanes\.urgent"/,
    );
    expect(() => load({ PROXY_LANES: "{" })).toThrow(/PROXY_LANES/);
  });
});

import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { checkServer, NatsConnectError, versionAtLeast } from "../../src/nats/connect.js";

/** Just what checkServer reads of a connection. */
const fakeConn = (version: string) =>
  ({ info: { version }, getServer: () => "127.0.0.1:4222" }) as unknown as NatsConnection;

describe("server version", () => {
  it("compares dotted versions numerically", () => {
    expect(versionAtLeast("2.10.27", "2.10.0")).toBe(true);
    expect(versionAtLeast("2.9.10", "2.10.0")).toBe(false);
    expect(versionAtLeast("2.15.1", "2.11.0")).toBe(true);
    expect(versionAtLeast("2.11.0-RC.1", "2.11.0")).toBe(true);
    expect(versionAtLeast("v2.10.2", "2.10.22")).toBe(false);
  });

  it("refuses a server older than 2.10 with a line naming the version and the fix", () => {
    expect(() => checkServer(fakeConn("2.9.10"))).toThrow(NatsConnectError);
    expect(() => checkServer(fakeConn("2.9.10"))).toThrow(
      /nats-server 2\.9\.10 at 127\.0\.0\.1:4222 is too old: .* needs nats-server 2\.10\.0 or newer/,
    );
  });

  it("reports which newer features the server has", () => {
    expect(checkServer(fakeConn("2.10.27"))).toEqual({
      version: "2.10.27",
      consumerPause: false,
      messageTtl: false,
    });
    expect(checkServer(fakeConn("2.15.1"))).toMatchObject({
      consumerPause: true,
      messageTtl: true,
    });
  });
});

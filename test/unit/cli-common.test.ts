import { describe, expect, it } from "vitest";
import { normaliseArgv } from "../../src/cli/common.js";

describe("normaliseArgv", () => {
  it("rewrites snake_case flags with =value to kebab-case", () => {
    expect(normaliseArgv(["--nats_server=nats://h:4222"])).toEqual(["--nats-server=nats://h:4222"]);
  });

  it("rewrites snake_case flags followed by a separate value", () => {
    expect(normaliseArgv(["serve", "--nkey_seed_file", "my_seed.nk"])).toEqual([
      "serve",
      "--nkey-seed-file",
      "my_seed.nk",
    ]);
  });

  it("never touches the value after =", () => {
    expect(normaliseArgv(["--tls_ca=/etc/my_ca.pem", "--openai_api_key=sk-a_b"])).toEqual([
      "--tls-ca=/etc/my_ca.pem",
      "--openai-api-key=sk-a_b",
    ]);
  });

  it("leaves positional arguments and short flags with underscores alone", () => {
    const argv = ["node", "/usr/bin/main.js", "submit", "what_is this?", "-x_y", "a=b_c"];
    expect(normaliseArgv(argv)).toEqual(argv);
  });

  it("leaves kebab-case flags and the -- separator unchanged", () => {
    const argv = ["--nats-server", "u", "--debug", "--"];
    expect(normaliseArgv(argv)).toEqual(argv);
  });

  it("returns a new array", () => {
    const argv = ["--tls_cert", "c"];
    const out = normaliseArgv(argv);
    expect(out).not.toBe(argv);
    expect(argv).toEqual(["--tls_cert", "c"]);
  });

  // the operands after the "--" end-of-options separator: normaliseArgv(["submit", "--",
  // "--what_is this_x"]) returns [..., "--what-is this-x"], changing the user's prompt.
  // Expected: arguments after "--" are left untouched.
  it("leaves arguments after the -- separator untouched", () => {
    const argv = ["submit", "--", "--what_is this_x"];
    expect(normaliseArgv(argv)).toEqual(argv);
  });
});

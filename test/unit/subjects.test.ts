import { describe, expect, it } from "vitest";
import {
  DEFAULT_SUBJECTS,
  idFromSubject,
  idProblem,
  isValidId,
  newId,
  subjectFor,
} from "../../src/protocol/subjects.js";

describe("isValidId / idProblem", () => {
  it.each(["a.b", "a*", ">", "a>b", "with space", "tab\there", "new\nline", "", "x".repeat(201)])(
    "refuses %j",
    (id) => {
      expect(isValidId(id)).toBe(false);
      expect(idProblem(id)).toEqual(expect.any(String));
    },
  );

  it.each(["a-b_c:1", "4ZkQ8nQe2vC1rT9xY0pL3m", "x".repeat(200), "user@example~1+2=3"])(
    "accepts %j",
    (id) => {
      expect(isValidId(id)).toBe(true);
      expect(idProblem(id)).toBeUndefined();
    },
  );

  it("explains what is wrong", () => {
    expect(idProblem("")).toMatch(/empty/);
    expect(idProblem("x".repeat(201))).toMatch(/201 characters.*200/);
    expect(idProblem("a.b")).toMatch(/may only contain/);
  });

  it("never echoes control characters back", () => {
    const p = idProblem("bad\u0007id\u001b");
    expect(p).toBeDefined();
    // eslint-disable-next-line no-control-regex
    expect(p).not.toMatch(/[\x00-\x1f]/);
  });
});

describe("newId", () => {
  it("produces valid ids that are unique over 1000 calls", () => {
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = newId();
      expect(isValidId(id)).toBe(true);
      ids.add(id);
    }
    expect(ids.size).toBe(1000);
  });
});

describe("subjects", () => {
  it("builds and takes apart <prefix>.<id>", () => {
    const s = subjectFor(DEFAULT_SUBJECTS.requests, "abc");
    expect(s).toBe("openai.requests.abc");
    expect(idFromSubject(s)).toBe("abc");
    expect(idFromSubject("openai.dlq.x-y_z:1")).toBe("x-y_z:1");
    expect(idFromSubject("plain")).toBe("plain");
  });

  it("has the contract's default names", () => {
    expect(DEFAULT_SUBJECTS).toEqual({
      requests: "openai.requests",
      results: "openai.results",
      dlq: "openai.dlq",
      shim: "openai_requests",
    });
  });
});

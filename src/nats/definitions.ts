/**
 * The stream and consumer definitions a configuration asks for: streams/*.json with
 * the lanes of its tenants derived in (see lanes.ts). `streams apply`, `streams info`
 * and `serve` all use this one function, so they never disagree.
 */
import type { Config } from "../config/schema.js";
import { deriveDefinitions, lanesOf, type Lane, type LaneNames } from "./lanes.js";
import { loadDefinitions, type Definitions } from "./streams.js";
import { tenantsMetadata } from "./tenants.js";

export interface ConfiguredDefinitions {
  defs: Definitions;
  lanes: Lane[];
  names: LaneNames;
}

/**
 * Reads the definitions directory and derives the lanes.
 * @param dir overrides `streams.dir`
 * @param replicas overrides every stream's `num_replicas`
 */
export function definitionsFor(
  config: Config,
  dir?: string,
  replicas?: number,
): ConfiguredDefinitions {
  const s = config.streams;
  const names: LaneNames = {
    stream: s.requests,
    prefix: s.requests_prefix,
    consumerBase: s.consumer,
    poisonStream: s.poison,
  };
  const lanes = lanesOf(config.tenants, config.lanes, names);
  const defs = deriveDefinitions(
    loadDefinitions(dir ?? s.dir, replicas),
    lanes,
    names,
    tenantsMetadata(config.tenants, s.consumer),
  );
  return { defs, lanes, names };
}

// The client's HTTP types against the ones generated from Nexus's /openapi.json
// (openapi-typescript writes contract/openapi.d.ts): this compiles only while they agree.
import type * as Client from "../types/index.js";
import type { components, paths } from "./openapi.js";

type Schemas = components["schemas"];
type Post = paths["/api/nexus/producer"]["post"];
type Get = paths["/api/nexus/producer"]["get"];
type Json<R> = R extends { content: { "application/json": infer Body } } ? Body : never;

/** `true` only when A and B are assignable to each other. */
type Mutual<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

/**
 * `true` only when A and B are assignable to each other and name the same fields: an optional
 * field one side lacks (ApiError's `detail`) leaves them assignable, but not the same.
 */
type Same<A, B> = Mutual<A, B> extends true ? Mutual<keyof A, keyof B> : false;

export const agreed: {
  snapshot: Same<Client.Snapshot, Json<Post["requestBody"]>>;
  message: Same<Client.ChatMessage, Schemas["ChatMessage"]>;
  accepted: Same<Client.Accepted, Json<Post["responses"][202]>>;
  badRequest: Same<Client.ApiError, Json<Post["responses"][400]>>;
  timedOut: Same<Client.ApiError, Json<Post["responses"][408]>>;
  tooLarge: Same<Client.ApiError, Json<Post["responses"][413]>>;
  notJson: Same<Client.ApiError, Json<Post["responses"][415]>>;
  invalid: Same<Client.ApiError, Json<Post["responses"][422]>>;
  rateLimited: Same<Client.ApiError, Json<Post["responses"][429]>>;
  unavailable: Same<Client.ApiError, Json<Post["responses"][503]>>;
  errorCodes: Mutual<Client.ErrorCode, Schemas["ApiError"]["error"]>;
  problem: Same<Client.FieldProblem, Schemas["FieldProblem"]>;
  healthy: Same<Client.Health, Json<Get["responses"][200]>>;
  metrics: Same<Client.QueueMetrics, Schemas["QueueMetrics"]>;
  unhealthy: Same<Client.Unhealthy, Json<Get["responses"][503]>>;
  idempotencyKey: Mutual<"Idempotency-Key" | "traceparent", keyof NonNullable<Post["parameters"]["header"]>>;
} = {
  snapshot: true,
  message: true,
  accepted: true,
  badRequest: true,
  timedOut: true,
  tooLarge: true,
  notJson: true,
  invalid: true,
  rateLimited: true,
  unavailable: true,
  errorCodes: true,
  problem: true,
  healthy: true,
  metrics: true,
  unhealthy: true,
  idempotencyKey: true,
};

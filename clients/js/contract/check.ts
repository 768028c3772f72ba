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

export const agreed: {
  snapshot: Mutual<Client.Snapshot, Json<Post["requestBody"]>>;
  message: Mutual<Client.ChatMessage, Schemas["ChatMessage"]>;
  accepted: Mutual<Client.Accepted, Json<Post["responses"][202]>>;
  badRequest: Mutual<Client.ApiError, Json<Post["responses"][400]>>;
  tooLarge: Mutual<Client.ApiError, Json<Post["responses"][413]>>;
  notJson: Mutual<Client.ApiError, Json<Post["responses"][415]>>;
  invalid: Mutual<Client.ApiError, Json<Post["responses"][422]>>;
  rateLimited: Mutual<Client.ApiError, Json<Post["responses"][429]>>;
  unavailable: Mutual<Client.ApiError, Json<Post["responses"][503]>>;
  errorCodes: Mutual<Client.ErrorCode, Schemas["ApiError"]["error"]>;
  problem: Mutual<Client.FieldProblem, Schemas["FieldProblem"]>;
  healthy: Mutual<Client.Health, Json<Get["responses"][200]>>;
  unhealthy: Mutual<Client.Unhealthy, Json<Get["responses"][503]>>;
  idempotencyKey: Mutual<"Idempotency-Key" | "traceparent", keyof NonNullable<Post["parameters"]["header"]>>;
} = {
  snapshot: true,
  message: true,
  accepted: true,
  badRequest: true,
  tooLarge: true,
  notJson: true,
  invalid: true,
  rateLimited: true,
  unavailable: true,
  errorCodes: true,
  problem: true,
  healthy: true,
  unhealthy: true,
  idempotencyKey: true,
};

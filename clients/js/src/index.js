export {
  DEFAULTS,
  backoffDelay,
  createSender,
  isRetryable,
  memoryStorage,
  parseRetryAfter,
  safeStorage,
} from "./sender.js";

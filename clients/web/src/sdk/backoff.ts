// Reconnect delays: exponential with full jitter, so that a server restart
// does not bring every client back in the same second.

export interface BackoffPolicy {
  /** The first retry's cap, ms. */
  baseMs: number;
  /** The largest cap, ms. */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 500, maxMs: 30_000 };

/** The delay before retry number `attempt` (0 first): uniform in [0, cap). */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random = Math.random): number {
  const cap = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

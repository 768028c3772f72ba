"""When to try a failed message again, and when to give up on it."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter, capped, for at most `max_attempts` reads."""

    max_attempts: int = 5
    base_s: float = 2.0
    cap_s: float = 300.0

    def exhausted(self, attempts: int) -> bool:
        """True once a message has been read `max_attempts` times."""
        return attempts >= self.max_attempts

    def delay(
        self, attempts: int, *, at_least: float | None = None, rng: random.Random | None = None
    ) -> int:
        """Seconds to hide a message after its `attempts`-th failed read (at least 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1))
        jittered = (rng or random).uniform(ceiling / 2, ceiling)
        return max(1, round(max(jittered, min(at_least or 0.0, self.cap_s))))

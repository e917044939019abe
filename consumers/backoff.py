"""Capped exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random


def backoff_ms(attempt: int, initial_ms: int, max_ms: int, rng: random.Random | None = None) -> int:
    """Delay before retry number ``attempt`` (1-based): uniform in [initial/2, min(cap, 2^n)]."""
    ceiling = min(max_ms, initial_ms * (2 ** max(0, attempt - 1)))
    floor = min(ceiling, initial_ms // 2)
    return (rng or random).randint(floor, max(floor, ceiling))

"""How a run loads each lane: closed-loop concurrency levels or open-loop request rates,
and the optional capacity search that picks the loads itself.

Closed loop: c users each send their next request when their previous one finished.
Open loop: requests arrive on a schedule (Poisson with vLLM's burstiness factor, or
evenly spaced) whatever the server does, so a slow server builds a queue instead of
slowing the arrivals; `max_concurrency` optionally caps the requests in flight, as
`vllm bench serve --max-concurrency` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

CONCURRENCY, RATE = "concurrency", "rate"
LOAD_MODES: tuple[str, ...] = (CONCURRENCY, RATE)
ARRIVALS: tuple[str, ...] = ("poisson", "constant")
MAX_RATE = 10_000.0  # req/s; stated in the error


@dataclass
class LoadPattern:
    """Per run; every lane gets the same pattern."""

    mode: str = CONCURRENCY
    rates: list[float | None] = field(default_factory=list)  # req/s; None = all at once
    arrival: str = "poisson"
    burstiness: float = 1.0  # gamma shape: 1 = Poisson, < 1 burstier, > 1 more even
    max_concurrency: int | None = None  # cap on requests in flight (open loop)
    ramp_from: float | None = None  # req/s at a level's start, rising linearly to its rate
    seed: int | None = None  # arrivals' seed; the runner draws a fresh one when None

    def level_load(self, rate: float | None) -> dict[str, Any]:
        """What a rate level's row in the store records about its load."""
        return {
            "mode": RATE,
            "rate": rate,
            "arrival": self.arrival,
            "burstiness": self.burstiness,
            "max_concurrency": self.max_concurrency,
            "ramp_from": self.ramp_from,
        }


@dataclass
class CapacitySearch:
    """Double the load until a level misses the SLO, then bisect to `tolerance`.

    tolerance: in users for concurrency (default 1: the exact number), a share of the
    bracket's low end for rates (default 0.1: within 10%).
    """

    mode: str = CONCURRENCY
    start: float = 1.0
    max: float = 64.0
    tolerance: float | None = None

    def step(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return 1.0 if self.mode == CONCURRENCY else 0.1


class RateError(ValueError):
    """A list of request rates that cannot be run. `part` is the piece at fault (None
    when no rate was given at all); `reason` is "not a number" or "not above 0". The CLI
    and the Run page each say it in their own words."""

    def __init__(self, part: str | None, reason: str) -> None:
        super().__init__(f"{part!r}: {reason}" if part is not None else reason)
        self.part, self.reason = part, reason


NOT_A_NUMBER, NOT_ABOVE_ZERO, NO_RATE = "not a number", "not above 0", "no rate"


def parse_rates(text: str) -> list[float | None]:
    """ "1, 2.5, inf" -> [1.0, 2.5, None] (None: all at once), repeats dropped, in order;
    RateError on a piece that is not a rate or on no rate at all."""
    out: list[float | None] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if part.lower() in ("inf", "infinity"):
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise RateError(part, NOT_A_NUMBER) from None
        if not math.isfinite(value) or value <= 0:
            raise RateError(part, NOT_ABOVE_ZERO)
        out.append(value)
    if not out:
        raise RateError(None, NO_RATE)
    return list(dict.fromkeys(out))


def rate_label(rate: float | None) -> str:
    return "all at once" if rate is None or math.isinf(rate) else f"{rate:g} req/s"


def level_label(load: dict[str, Any] | None, key: int) -> str:
    """How a level reads on pages and charts: "c=4" or "2 req/s" (and its cap)."""
    if not load or load.get("mode") != RATE:
        return f"c={key}"
    text = rate_label(load.get("rate"))
    if load.get("max_concurrency"):
        text += f" (≤{load['max_concurrency']} in flight)"
    return text

"""Units of the information estimates: nats, with bits = nats / ln 2 alongside."""
from __future__ import annotations

import math

LN2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def bits(nats: float) -> float:
    return float(nats) / LN2

"""Routing by qualification (issue 3 §4): the queue hands an authorizer only items it
may decide, without scanning the queue.

Each authorizer holds a qualification: business types and an amount ceiling in minor
units of the local currency (server/accounts/model.py). Waiting items are therefore
kept in one lane (a sorted set) per (priority class, business type, amount band):

    {authq}:lane:i<importance>u<urgency>:<business type>:b<band>

and the set ``{authq}:lanes`` names the lanes that hold anything. A claim reads that
set, keeps the lanes the authorizer qualifies for, and compares their heads: its cost
grows with the number of non-empty lanes (bounded by classes x types x bands, a few
hundred at most), never with the number of waiting items.

A band holds the amounts up to and including its upper edge, so a ceiling set at an
edge (CNY 50,000, 200,000, 500,000, 2,000,000, 5,000,000) takes the bands below it
wholly, its own amount included. Any band is wholly inside or wholly outside a ceiling
except the one the ceiling falls in: there the claim also reads each head's amount and
passes over the ones above the ceiling, a bounded look-ahead (16 items, as for
separation of duties); an item behind more than that waits for an authorizer whose
ceiling covers the band. The band just above an edge ceiling is looked into too: items
stored while edges were exclusive wait one band up."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from server.accounts.model import Qualification

# Upper edges of the amount bands in minor units of the local currency (CNY fen).
BAND_EDGES_MINOR = (
    5_000_000,  # CNY 50,000
    20_000_000,  # CNY 200,000
    50_000_000,  # CNY 500,000: the regulation's on-site review threshold (R3)
    200_000_000,  # CNY 2,000,000
    500_000_000,  # CNY 5,000,000
)
# Band numbers the Lua script compares; larger than any band when nothing is capped.
NO_CEILING_BAND = 99

_LANE = re.compile(r":lane:i(\d)u(\d):(.+):b(\d+)\Z")


def band_of(local_minor: int) -> int:
    """The amount band of a local-currency amount: 0 for the smallest; an amount at
    an edge belongs to the band it closes."""
    return bisect.bisect_left(BAND_EDGES_MINOR, local_minor)


@dataclass(frozen=True, slots=True)
class ClaimFilter:
    """A qualification in the form the claim script checks: the business types ('*'
    for all), the last band wholly within the ceiling, and the ceiling itself (0:
    none) for the one band it cuts through."""

    business_types: str
    full_bands: int
    ceiling_minor: int

    @classmethod
    def of(cls, qualification: Qualification | None) -> ClaimFilter:
        if qualification is None:
            return ANYTHING
        types = "*" if qualification.allows_all else ",".join(sorted(qualification.business_types))
        ceiling = qualification.ceiling_minor
        if ceiling <= 0:
            return cls(types, NO_CEILING_BAND, 0)
        # Band b holds amounts up to BAND_EDGES_MINOR[b]: wholly allowed when that is
        # within the ceiling.
        whole = sum(1 for edge in BAND_EDGES_MINOR if edge <= ceiling)
        return cls(types, whole - 1, ceiling)

    @property
    def unrestricted(self) -> bool:
        return self.business_types == "*" and self.ceiling_minor == 0


ANYTHING = ClaimFilter("*", NO_CEILING_BAND, 0)


@dataclass(frozen=True, slots=True)
class LaneName:
    importance: int
    urgency: int
    business_type: str
    band: int

    @classmethod
    def parse(cls, key: str) -> LaneName | None:
        match = _LANE.search(key)
        if match is None:
            return None
        return cls(int(match[1]), int(match[2]), match[3], int(match[4]))

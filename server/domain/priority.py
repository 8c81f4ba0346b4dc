"""Queue order (R7): importance, then urgency, then first come first served, with
aging so that nothing starves.

An item's place in the queue is its submission time minus a head start:
``(importance - 1) * importance_step + (urgency - 1) * urgency_step``. The queue
serves the smallest place first. So among items submitted within one importance
step of each other, the more important goes first, then the more urgent, then the
earlier; and an item is never overtaken by work submitted more than the largest
head start after it. With the defaults (5 min per importance level, 1 min for
URGENT) a waiting item of the lowest class goes ahead of any new work once it has
waited 11 minutes: its wait is bounded however much higher-class work arrives.

Items wait in one lane (a sorted set) per (importance, urgency) class; a claim
compares the heads of the lanes, so its cost does not grow with queue depth."""

from __future__ import annotations

from dataclasses import dataclass

IMPORTANCE_LEVELS = (1, 2, 3)
URGENCY_LEVELS = (1, 2)  # NORMAL, URGENT


@dataclass(frozen=True, slots=True)
class PriorityClass:
    importance: int
    urgency: int

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCE_LEVELS:
            raise ValueError(f"importance must be one of {IMPORTANCE_LEVELS}")
        if self.urgency not in URGENCY_LEVELS:
            raise ValueError(f"urgency must be one of {URGENCY_LEVELS}")

    @property
    def lane(self) -> str:
        return f"i{self.importance}u{self.urgency}"

    def head_start_ms(self, importance_step_ms: int, urgency_step_ms: int) -> int:
        return (self.importance - 1) * importance_step_ms + (self.urgency - 1) * urgency_step_ms


def all_classes() -> list[PriorityClass]:
    """Every class, most important first (claim breaks exact ties in this order)."""
    return [
        PriorityClass(importance, urgency)
        for importance in reversed(IMPORTANCE_LEVELS)
        for urgency in reversed(URGENCY_LEVELS)
    ]

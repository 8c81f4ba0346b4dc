"""The period a report covers: whole days, both ends included, in UTC, so that the
same command gives the same figures on any machine and at any later time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


class PeriodError(ValueError):
    """A period that cannot be reported on; the message names the option."""


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise PeriodError(f"--to {self.last} is before --from {self.first}")

    @classmethod
    def parse(cls, first: str, last: str) -> Period:
        return cls(_day(first, "--from"), _day(last, "--to"))

    @property
    def start_ms(self) -> int:
        return _ms(self.first)

    @property
    def end_ms(self) -> int:
        """Exclusive: midnight after the last day."""
        return _ms(self.last + timedelta(days=1))

    def __contains__(self, at_ms: object) -> bool:
        return isinstance(at_ms, int) and self.start_ms <= at_ms < self.end_ms

    def __str__(self) -> str:
        return f"{self.first.isoformat()} to {self.last.isoformat()} (UTC)"


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"{option}: expected a date YYYY-MM-DD, got {text!r}") from None


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000

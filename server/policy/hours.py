"""Operating hours (R9): when the center works and when each branch may send it requests.

Schedules are weekly, per weekday, with one or more intervals in the schedule's own time
zone; a schedule may be open around the clock; holidays close it for a whole local date.
Extended-hours windows are runtime data (requested by a branch, approved by a supervisor)
and so are passed in rather than read from the policy file.

Intervals lie within one local day ("24:00" may end one); hours past midnight are written as
an interval on the next weekday, so a holiday always closes exactly its own date."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.policy.model import FieldFault, KeyPath, check_keys, flag, sub_table, text, text_list

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SCHEDULE_KEYS = ("timezone", "always_open", "holidays", *WEEKDAYS)
_HOURS_KEYS = ("timezone", "holidays", "center", "default_branch", "branches")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})\Z")
_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):(\d{2})\Z")


@dataclass(frozen=True, slots=True)
class Interval:
    """Minutes since local midnight; start inclusive, end exclusive (1440 is "24:00")."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class Schedule:
    subject: str  # "the center" or "branch B001": how reasons name it
    branch_id: str | None
    timezone_name: str
    zone: tzinfo
    weekly: tuple[tuple[Interval, ...], ...]  # Monday first, seven entries
    holidays: frozenset[date] = frozenset()
    always_open: bool = False


@dataclass(frozen=True)
class OperatingHours:
    center: Schedule
    default_branch: Schedule
    branches: Mapping[str, Schedule]

    def for_branch(self, branch_id: str) -> Schedule:
        """The branch's own schedule, else the default branch schedule under its name."""
        own = self.branches.get(branch_id)
        if own is not None:
            return own
        return dataclasses.replace(
            self.default_branch, subject=f"branch {branch_id}", branch_id=branch_id
        )


@dataclass(frozen=True, slots=True)
class ExtendedWindow:
    """An approved extended-hours window (R9): the branch may send requests in [start, end)."""

    branch_id: str
    start: datetime
    end: datetime
    reason: str
    approved_by: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("an extended-hours window needs time-zone-aware start and end")
        if self.end <= self.start:
            raise ValueError("an extended-hours window must end after it starts")
        if not self.reason.strip() or not self.approved_by.strip():
            raise ValueError("an extended-hours window needs a reason and an approver (R9)")

    def covers(self, when: datetime) -> bool:
        return self.start <= when < self.end

    def to_dict(self) -> dict[str, str]:
        return {
            "branch_id": self.branch_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
            "approved_by": self.approved_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExtendedWindow:
        return cls(
            branch_id=str(data["branch_id"]),
            start=datetime.fromisoformat(str(data["start"])),
            end=datetime.fromisoformat(str(data["end"])),
            reason=str(data["reason"]),
            approved_by=str(data["approved_by"]),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    open: bool
    reason: str


def is_open(schedule: Schedule, when: datetime, windows: Iterable[ExtendedWindow] = ()) -> Verdict:
    """Whether the schedule's subject is open at `when` (an aware datetime, any zone).
    Windows of other branches are ignored, so a caller's mix-up cannot open a branch."""
    regular = _regular(schedule, when)
    if regular.open:
        return regular
    for window in windows:
        if window.branch_id == schedule.branch_id and window.covers(when):
            return Verdict(
                True,
                f"{regular.reason}; open under an extended-hours window "
                f"{_span(window, schedule.zone)} approved by {window.approved_by}: "
                f"{window.reason}",
            )
    return Verdict(False, f"{regular.reason}; no approved extended-hours window")


def may_submit(
    center: Schedule, branch: Schedule, when: datetime, windows: Iterable[ExtendedWindow] = ()
) -> Verdict:
    """Whether the center takes this branch's requests at `when` (R9). An approved window
    opens both: the center's approval is its promise to staff that time."""
    windows = tuple(windows)
    verdict = is_open(branch, when, windows)
    if not verdict.open or any(w.branch_id == branch.branch_id and w.covers(when) for w in windows):
        return verdict
    center_verdict = _regular(center, when)
    if not center_verdict.open:
        return Verdict(False, f"{center_verdict.reason}; no approved extended-hours window")
    return verdict


def _regular(schedule: Schedule, when: datetime) -> Verdict:
    if when.tzinfo is None:
        raise ValueError("is_open needs a time-zone-aware datetime")
    local = when.astimezone(schedule.zone)
    zone = schedule.timezone_name
    who = schedule.subject
    if local.date() in schedule.holidays:
        return Verdict(False, f"{who} is closed on {local.date()} (holiday)")
    if schedule.always_open:
        return Verdict(True, f"{who} is open 24 hours")
    weekday = local.weekday()
    intervals = schedule.weekly[weekday]
    days = _DAY_NAMES[weekday] + "s"
    if not intervals:
        return Verdict(False, f"{who} is closed on {days} ({_it_is(local, zone)})")
    second = local.hour * 3600 + local.minute * 60 + local.second
    hours = ", ".join(str(i) for i in intervals)
    for interval in intervals:
        if interval.start * 60 <= second < interval.end * 60:
            return Verdict(True, f"{who} is open ({days} {hours} {zone})")
    # Formatted only for a refusal: the open path runs twice for every submit.
    now = _it_is(local, zone)
    if second < intervals[0].start * 60:
        return Verdict(
            False, f"{who} opens at {_hhmm(intervals[0].start)} {zone} on {days} ({now})"
        )
    if second >= intervals[-1].end * 60:
        return Verdict(
            False, f"{who} closes at {_hhmm(intervals[-1].end)} {zone} on {days} ({now})"
        )
    return Verdict(False, f"{who} is closed between its {days} hours {hours} {zone} ({now})")


def _it_is(local: datetime, zone: str) -> str:
    return f"it is {local:%H:%M} on {local:%A %Y-%m-%d} {zone}"


def _span(window: ExtendedWindow, zone: tzinfo) -> str:
    start, end = window.start.astimezone(zone), window.end.astimezone(zone)
    return f"{start:%Y-%m-%d %H:%M}-{end:%Y-%m-%d %H:%M}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- reading the [hours] tables -------------------------------------------------------------


def parse_hours(table: Mapping[str, Any], path: KeyPath) -> OperatingHours:
    check_keys(table, _HOURS_KEYS, path, "[hours]")
    base_zone = text(table, "timezone", path, "[hours]")
    zone = _zone(base_zone, (*path, "timezone"), "[hours]")
    holidays = _dates(table, path, "[hours]")
    defaults = (base_zone, zone, holidays)
    schedules: list[Schedule] = []
    for key, subject in (("center", "the center"), ("default_branch", "the default branch")):
        entry = sub_table(table, key, path, "[hours]")
        if entry is None:
            raise FieldFault(path, f"[hours] needs a [hours.{key}] table")
        schedules.append(_schedule(entry, (*path, key), f"[hours.{key}]", subject, None, defaults))
    branches: dict[str, Schedule] = {}
    listed = sub_table(table, "branches", path, "[hours]") or {}
    for branch_id in listed:
        where = f"[hours.branches.{branch_id}]"
        entry = sub_table(listed, branch_id, (*path, "branches"), where) or {}
        branches[branch_id] = _schedule(
            entry, (*path, "branches", branch_id), where, f"branch {branch_id}", branch_id, defaults
        )
    center, default_branch = schedules
    return OperatingHours(center, default_branch, MappingProxyType(branches))


def _schedule(
    table: Mapping[str, Any],
    path: KeyPath,
    where: str,
    subject: str,
    branch_id: str | None,
    defaults: tuple[str, tzinfo, frozenset[date]],
) -> Schedule:
    check_keys(table, _SCHEDULE_KEYS, path, where)
    zone_name, zone, holidays = defaults
    if "timezone" in table:
        zone_name = text(table, "timezone", path, where)
        zone = _zone(zone_name, (*path, "timezone"), where)
    always_open = flag(table, "always_open", path, where, False)
    if "holidays" in table:
        holidays = _dates(table, path, where)
    elif always_open:
        holidays = frozenset()  # a 24-hour schedule observes only holidays it lists itself
    weekly = tuple(_day(table, day, path, where) for day in WEEKDAYS)
    if always_open and any(weekly):
        raise FieldFault(path, f"{where}: always_open = true cannot also list weekday hours")
    if not always_open and not any(weekly):
        raise FieldFault(
            path,
            f"{where}: no opening hours (list weekday intervals such as "
            'mon = ["09:00-17:00"], or set always_open = true)',
        )
    return Schedule(subject, branch_id, zone_name, zone, weekly, holidays, always_open)


def _day(table: Mapping[str, Any], day: str, path: KeyPath, where: str) -> tuple[Interval, ...]:
    intervals: list[Interval] = []
    for index, item in enumerate(text_list(table, day, path, where)):
        at = (*path, day, index)
        match = _INTERVAL.match(item)
        if match is None:
            raise FieldFault(at, f'{where}: {day} interval {item!r} is not like "09:00-17:00"')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
            raise FieldFault(at, f"{where}: {day} interval {item!r} is not a valid time")
        interval = Interval(h1 * 60 + m1, h2 * 60 + m2)
        if interval.end <= interval.start:
            raise FieldFault(
                at,
                f"{where}: {day} interval {item!r} ends before it starts "
                "(write hours past midnight on the next day)",
            )
        intervals.append(interval)
    intervals.sort(key=lambda i: i.start)
    for earlier, later in itertools.pairwise(intervals):
        if later.start < earlier.end:
            raise FieldFault(
                (*path, day), f"{where}: {day} intervals {earlier} and {later} overlap"
            )
    return tuple(intervals)


def _dates(table: Mapping[str, Any], path: KeyPath, where: str) -> frozenset[date]:
    raw = table.get("holidays", [])
    if not isinstance(raw, list):
        raise FieldFault((*path, "holidays"), f"{where}: holidays must be a list of dates")
    days: set[date] = set()
    for index, item in enumerate(raw):
        try:
            if isinstance(item, str):
                item = date.fromisoformat(item)
            if isinstance(item, datetime) or not isinstance(item, date):
                raise ValueError
        except ValueError:
            raise FieldFault(
                (*path, "holidays", index),
                f"{where}: holiday {item!r} is not a date like 2025-10-01",
            ) from None
        days.add(item)
    return frozenset(days)


def _zone(name: str, path: KeyPath, where: str) -> tzinfo:
    """An IANA zone, or a fixed offset ("+08:00") for hosts without time-zone data."""
    if name == "UTC":
        return UTC
    offset = _OFFSET.match(name)
    if offset is not None:
        sign, hh, mm = offset.groups()
        delta = timedelta(hours=int(hh), minutes=int(mm))
        if delta >= timedelta(hours=24) or int(mm) > 59:
            raise FieldFault(path, f"{where}: time-zone offset {name!r} is out of range")
        return timezone(-delta if sign == "-" else delta, name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FieldFault(
            path,
            f"{where}: unknown time zone {name!r} (use an IANA name such "
            'as "Asia/Shanghai", or a fixed offset such as "+08:00" where the '
            "host has no time-zone data)",
        ) from None

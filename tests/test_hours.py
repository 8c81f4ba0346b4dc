"""Operating hours (R9) and branch enrollment (R10): pure domain, no server."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta

import pytest

from server.policy.enrollment import (
    ENROLLED,
    Enrollment,
    EnrollmentStatus,
    check_enrollment,
)
from server.policy.hours import ExtendedWindow, OperatingHours, is_open, may_submit
from server.policy.loader import load_policy, parse_policy
from server.policy.model import PolicyError

BUSINESS = """
[[business]]
code = "CASH_DEPOSIT"
name_zh = "现金存款"
name_en = "Cash deposit"
mode = "DIRECT_CENTRAL"
importance = 2
required_images = ["VOUCHER"]
"""

HOURS = """
[hours]
timezone = "Asia/Shanghai"
holidays = [2025-10-01, "2025-10-02"]

[hours.center]
mon = ["08:30-17:30"]
tue = ["08:30-17:30"]
wed = ["08:30-17:30"]
thu = ["08:30-17:30"]
fri = ["08:30-17:30"]
sat = ["08:30-12:30"]

[hours.default_branch]
mon = ["09:00-12:00", "13:30-17:00"]
tue = ["09:00-12:00", "13:30-17:00"]
wed = ["09:00-12:00", "13:30-17:00"]
thu = ["09:00-12:00", "13:30-17:00"]
fri = ["09:00-12:00", "13:30-17:00"]
sat = ["09:00-12:00"]

[hours.branches.B024]
always_open = true

[hours.branches.B025]
always_open = true
holidays = [2025-10-01]

[hours.branches.EVE]
fri = ["17:00-21:00"]
sat = ["00:00-01:00", "17:00-24:00"]

[hours.branches.LDN]
timezone = "Europe/London"
mon = ["09:00-17:00"]

[hours.branches.FIXED]
timezone = "+08:00"
fri = ["09:00-17:00"]
"""

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def hours() -> OperatingHours:
    return parse_policy(BUSINESS + HOURS).hours


def at(text: str) -> datetime:
    """A Shanghai wall-clock time; 2025-03-07 is a Friday."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def window(branch: str, start: datetime, hours: int = 3) -> ExtendedWindow:
    return ExtendedWindow(branch, start, start + timedelta(hours=hours), "year-end close", "sup-1")


def test_shanghai_time_zone_data_is_available() -> None:
    assert zoneinfo.ZoneInfo("Asia/Shanghai").utcoffset(datetime(2025, 1, 1)) == timedelta(hours=8)


# --- regular hours ------------------------------------------------------------------------


def test_inside_and_outside_regular_hours(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    assert is_open(branch, at("2025-03-07T09:00")).open
    assert is_open(branch, at("2025-03-07T16:59:59")).open
    closed = is_open(branch, at("2025-03-07T17:00"))
    assert not closed.open
    assert closed.reason.startswith(
        "branch B001 closes at 17:00 Asia/Shanghai on Fridays (it is 17:00 on Friday"
    )
    assert closed.reason.endswith("no approved extended-hours window")
    early = is_open(branch, at("2025-03-07T08:59"))
    assert "branch B001 opens at 09:00 Asia/Shanghai on Fridays" in early.reason
    lunch = is_open(branch, at("2025-03-07T12:30"))
    assert not lunch.open
    assert "closed between its Fridays hours 09:00-12:00, 13:30-17:00" in lunch.reason


def test_weekdays_have_their_own_hours(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    assert is_open(branch, at("2025-03-07T15:00")).open  # Friday afternoon
    saturday = is_open(branch, at("2025-03-08T15:00"))
    assert not saturday.open
    assert "closes at 12:00 Asia/Shanghai on Saturdays" in saturday.reason
    sunday = is_open(branch, at("2025-03-09T10:00"))
    assert not sunday.open
    assert "branch B001 is closed on Sundays" in sunday.reason


def test_time_zone_conversion_of_a_utc_datetime(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    # 08:59 UTC is 16:59 in Shanghai; 09:00 UTC is 17:00 there, closing time.
    assert is_open(branch, datetime(2025, 3, 7, 8, 59, tzinfo=UTC)).open
    closed = is_open(branch, datetime(2025, 3, 7, 9, 0, tzinfo=UTC))
    assert not closed.open
    assert "it is 17:00 on Friday 2025-03-07 Asia/Shanghai" in closed.reason
    # 01:30 UTC on Friday is 09:30 Friday in Shanghai, though Thursday evening in New York.
    new_york = datetime(2025, 3, 6, 20, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    assert is_open(branch, new_york).open


def test_a_branch_keeps_its_own_time_zone_and_daylight_saving(hours: OperatingHours) -> None:
    london = hours.branches["LDN"]
    # London is UTC+1 in summer: 16:30 UTC is 17:30 there, closed; in winter 16:30 is open.
    assert not is_open(london, datetime(2025, 7, 7, 16, 30, tzinfo=UTC)).open
    assert is_open(london, datetime(2025, 1, 6, 16, 30, tzinfo=UTC)).open


def test_fixed_offset_time_zone_matches_the_named_one(hours: OperatingHours) -> None:
    fixed = hours.branches["FIXED"]
    assert is_open(fixed, datetime(2025, 3, 7, 1, 0, tzinfo=UTC)).open  # 09:00 at +08:00
    closed = is_open(fixed, datetime(2025, 3, 7, 9, 0, tzinfo=UTC))
    assert "closes at 17:00 +08:00 on Fridays" in closed.reason


def test_evening_branch_and_hours_past_midnight(hours: OperatingHours) -> None:
    evening = hours.branches["EVE"]
    assert not is_open(evening, at("2025-03-07T10:00")).open
    assert is_open(evening, at("2025-03-07T20:59")).open
    assert is_open(evening, at("2025-03-08T23:59:59")).open  # until 24:00 on Saturday
    assert is_open(evening, at("2025-03-08T00:30")).open  # Friday night, written on Saturday
    assert not is_open(evening, at("2025-03-08T01:00")).open


def test_24_hour_branch(hours: OperatingHours) -> None:
    branch = hours.branches["B024"]
    for moment in ("2025-03-07T03:00", "2025-03-09T23:30", "2025-10-01T12:00"):
        verdict = is_open(branch, at(moment))
        assert verdict.open, moment
        assert verdict.reason == "branch B024 is open 24 hours"


def test_holidays_close_a_branch(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    holiday = is_open(branch, at("2025-10-01T10:00"))  # a Wednesday
    assert not holiday.open
    assert "branch B001 is closed on 2025-10-01 (holiday)" in holiday.reason
    assert not is_open(branch, at("2025-10-02T10:00")).open  # holiday written as a string
    assert is_open(branch, at("2025-10-08T10:00")).open
    # A 24-hour branch closes only on the holidays it lists itself.
    assert not is_open(hours.branches["B025"], at("2025-10-01T10:00")).open
    assert is_open(hours.branches["B025"], at("2025-10-02T10:00")).open


def test_unlisted_branch_follows_the_default_schedule(hours: OperatingHours) -> None:
    branch = hours.for_branch("B777")
    assert (branch.subject, branch.branch_id) == ("branch B777", "B777")
    assert branch.weekly == hours.default_branch.weekly


def test_naive_datetime_is_refused(hours: OperatingHours) -> None:
    with pytest.raises(ValueError, match="time-zone-aware"):
        is_open(hours.for_branch("B001"), datetime(2025, 3, 7, 10, 0))


# --- extended-hours windows ---------------------------------------------------------------


def test_extended_window_opens_a_branch_outside_its_hours(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    evening = at("2025-03-07T18:00")
    granted = window("B001", at("2025-03-07T17:00"))
    verdict = is_open(branch, evening, [granted])
    assert verdict.open
    assert "closes at 17:00" in verdict.reason
    assert "extended-hours window 2025-03-07 17:00-2025-03-07 20:00" in verdict.reason
    assert "approved by sup-1: year-end close" in verdict.reason
    # The window ends; another branch's window opens nothing here.
    assert not is_open(branch, at("2025-03-07T20:00"), [granted]).open
    assert not is_open(branch, evening, [window("B002", at("2025-03-07T17:00"))]).open


def test_window_in_utc_covers_the_same_instant(hours: OperatingHours) -> None:
    branch = hours.for_branch("B001")
    utc_window = window("B001", datetime(2025, 3, 7, 9, 0, tzinfo=UTC))  # 17:00-20:00 Shanghai
    assert is_open(branch, at("2025-03-07T19:59"), [utc_window]).open


def test_extended_window_needs_reason_approver_and_aware_times() -> None:
    start = at("2025-03-07T17:00")
    with pytest.raises(ValueError, match="reason and an approver"):
        ExtendedWindow("B001", start, start + timedelta(hours=1), " ", "sup-1")
    with pytest.raises(ValueError, match="reason and an approver"):
        ExtendedWindow("B001", start, start + timedelta(hours=1), "late", "")
    with pytest.raises(ValueError, match="end after it starts"):
        ExtendedWindow("B001", start, start, "late", "sup-1")
    with pytest.raises(ValueError, match="time-zone-aware"):
        ExtendedWindow("B001", datetime(2025, 3, 7, 17), start, "late", "sup-1")


def test_extended_window_round_trips_through_a_dict() -> None:
    granted = window("B001", at("2025-03-07T17:00"))
    data = granted.to_dict()
    assert data["start"] == "2025-03-07T17:00:00+08:00"
    assert ExtendedWindow.from_dict(data) == granted


def test_may_submit_needs_the_center_open_too(hours: OperatingHours) -> None:
    night = at("2025-03-07T03:00")
    branch = hours.branches["B024"]
    refused = may_submit(hours.center, branch, night)
    assert not refused.open
    assert "the center opens at 08:30 Asia/Shanghai on Fridays" in refused.reason
    # An approved window is the center's promise to staff that time.
    granted = window("B024", at("2025-03-07T02:00"))
    assert may_submit(hours.center, branch, night, [granted]).open
    day = may_submit(hours.center, hours.for_branch("B001"), at("2025-03-07T10:00"))
    assert day.open
    closed_branch = may_submit(hours.center, hours.for_branch("B001"), at("2025-03-07T17:10"))
    assert not closed_branch.open
    assert "branch B001 closes at 17:00" in closed_branch.reason


def test_shipped_policy_hours_load() -> None:
    shipped = load_policy().hours
    assert shipped.center.timezone_name == "Asia/Shanghai"
    assert is_open(shipped.for_branch("B001"), at("2025-03-07T10:00")).open
    assert not is_open(shipped.for_branch("B001"), at("2025-03-07T22:00")).open


# --- bad hours are refused with the line and the reason -----------------------------------


@pytest.mark.parametrize(
    ("old", "new", "marker", "reason"),
    [
        ('sat = ["09:00-12:00"]', 'sat = ["12:00-09:00"]', "12:00-09:00", "ends before it starts"),
        ('sat = ["09:00-12:00"]', 'sat = ["9-12"]', "9-12", 'not like "09:00-17:00"'),
        ('sat = ["09:00-12:00"]', 'sat = ["09:00-12:60"]', "12:60", "not a valid time"),
        (
            'sat = ["09:00-12:00"]',
            'sat = ["09:00-12:00", "11:00-13:00"]',
            "11:00-13:00",
            "overlap",
        ),
        ('timezone = "Europe/London"', 'timezone = "Mars/Olympus"', "Mars", "unknown time zone"),
        ('timezone = "+08:00"', 'timezone = "+25:00"', "+25:00", "out of range"),
        ('fri = ["17:00-21:00"]', 'friday = ["17:00-21:00"]', "friday", "unknown key 'friday'"),
        (
            "always_open = true\n\n",
            'always_open = true\nsun = ["09:00-10:00"]\n\n',
            "[hours.branches.B024]",
            "cannot also list weekday hours",
        ),
        ("holidays = [2025-10-01]", 'holidays = ["2025-13-01"]', "2025-13-01", "not a date"),
        ("[hours.center]\n", "[hours.centre]\n", "centre", "unknown key 'centre'"),
        ('timezone = "Asia/Shanghai"\n', "", "[hours]", "missing timezone"),
    ],
)
def test_bad_hours_are_refused_with_line_and_reason(
    old: str, new: str, marker: str, reason: str
) -> None:
    assert old in HOURS
    text = BUSINESS + HOURS.replace(old, new, 1)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.toml")
    expected = next(n for n, line in enumerate(text.splitlines(), 1) if marker in line)
    assert caught.value.line == expected, str(caught.value)
    assert reason in caught.value.reason


# --- enrollment (R10) ----------------------------------------------------------------------


def test_enrolled_branch_may_send_everything() -> None:
    assert check_enrollment(ENROLLED, "CASH_DEPOSIT") is None


def test_wholly_suspended_branch_is_refused() -> None:
    suspended = Enrollment(EnrollmentStatus.SUSPENDED, reason="cannot upload images")
    refusal = check_enrollment(suspended, "CASH_DEPOSIT")
    assert refusal is not None
    assert "suspended for this branch (cannot upload images)" in refusal
    assert "authorize on site (R10)" in refusal


def test_suspension_of_chosen_types_leaves_the_others() -> None:
    partial = Enrollment(
        EnrollmentStatus.SUSPENDED, frozenset({"CASH_WITHDRAWAL"}), "error rate too high"
    )
    refusal = check_enrollment(partial, "CASH_WITHDRAWAL")
    assert refusal is not None
    assert "CASH_WITHDRAWAL is suspended for this branch (error rate too high)" in refusal
    assert check_enrollment(partial, "CASH_DEPOSIT") is None


def test_withdrawn_branch_is_refused() -> None:
    withdrawn = Enrollment(EnrollmentStatus.WITHDRAWN, reason="branch merged")
    refusal = check_enrollment(withdrawn, "CASH_DEPOSIT")
    assert refusal is not None
    assert "withdrawn from central authorization (branch merged)" in refusal


def test_enrollment_needs_a_reason_and_consistent_types() -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        Enrollment(EnrollmentStatus.SUSPENDED)
    with pytest.raises(ValueError, match="only a SUSPENDED branch"):
        Enrollment(EnrollmentStatus.ENROLLED, frozenset({"CASH_DEPOSIT"}), "x")


def test_enrollment_round_trips_through_a_dict() -> None:
    partial = Enrollment(EnrollmentStatus.SUSPENDED, frozenset({"B_TYPE", "A_TYPE"}), "poor images")
    data = partial.to_dict()
    assert data == {
        "status": "SUSPENDED",
        "suspended_types": ["A_TYPE", "B_TYPE"],
        "reason": "poor images",
    }
    assert Enrollment.from_dict(data) == partial
    assert Enrollment.from_dict({"status": "ENROLLED"}) == ENROLLED
    for bad in ({}, {"status": "ASLEEP"}, {"status": "ENROLLED", "suspended_types": "A"}):
        with pytest.raises(ValueError, match=r"enrollment record|suspended_types"):
            Enrollment.from_dict(bad)


def test_holidays_are_inherited_from_the_hours_table() -> None:
    center = parse_policy(BUSINESS + HOURS).hours.center
    assert center.holidays == frozenset({date(2025, 10, 1), date(2025, 10, 2)})

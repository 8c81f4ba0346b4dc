"""Domain rules with no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.domain import money
from server.domain.priority import PriorityClass, all_classes
from server.domain.reasons import check_rejection
from server.domain.records import Image, Submission
from server.settings import Settings, SettingsError


def test_head_start_orders_importance_before_urgency() -> None:
    def start(importance: int, urgency: int) -> int:
        return PriorityClass(importance, urgency).head_start_ms(300_000, 60_000)

    assert start(1, 1) == 0
    assert start(1, 2) == 60_000
    assert start(2, 1) == 300_000
    assert start(3, 2) == 660_000
    # Within the aging window the most important class always leads.
    assert start(2, 1) > start(1, 2)
    assert [c.lane for c in all_classes()][:2] == ["i3u2", "i3u1"]


def test_priority_class_refuses_unknown_levels() -> None:
    with pytest.raises(ValueError, match="importance"):
        PriorityClass(4, 1)
    with pytest.raises(ValueError, match="urgency"):
        PriorityClass(1, 0)


def test_money_never_goes_through_float() -> None:
    assert money.parse_amount("12000.50", "CNY") == 1_200_050
    assert money.parse_amount("1000", "JPY") == 1000
    assert money.parse_amount("0.001", "KWD") == 1
    with pytest.raises(ValueError, match="decimals"):
        money.parse_amount("1.005", "USD")
    assert money.format_amount(1_200_050, "CNY") == "12,000.50 CNY"
    assert money.max_minor_units("JPY") == 10**12


def test_rejections_need_a_listed_reason() -> None:
    assert check_rejection("ID_MISMATCH", "") is None
    assert "needs a reason_code" in (check_rejection("", "") or "")
    assert "unknown reason_code" in (check_rejection("NOPE", "") or "")
    assert "needs a note" in (check_rejection("OTHER", " ") or "")


def _submission(**overrides: object) -> Submission:
    fields: dict[str, object] = dict(
        request_id="req-00000001",
        branch_id="b1",
        teller_id="t1",
        business_type="CASH_DEPOSIT",
        amount_minor=100,
        currency="CNY",
        account="6222",
        customer_name="Li",
        memo="",
        fields={"b": "2", "a": "1"},
        urgency=1,
        importance=2,
        images=(Image("ID_FRONT", "a" * 64, 10, "image/jpeg"),),
    )
    fields.update(overrides)
    return Submission(**fields)  # type: ignore[arg-type]


def test_submission_round_trips_and_fingerprints_its_content() -> None:
    original = _submission()
    assert Submission.unpack(original.pack()) == original
    assert _submission(fields={"a": "1", "b": "2"}).fingerprint() == original.fingerprint()
    assert _submission(preparation_seconds=40).fingerprint() == original.fingerprint()
    assert _submission(amount_minor=101).fingerprint() != original.fingerprint()
    assert _submission(teller_id="t2").fingerprint() != original.fingerprint()


def test_settings_precedence_and_errors(tmp_path: Path) -> None:
    config = tmp_path / "authq.toml"
    config.write_text('[server]\nlease_ms = 1000\nlisten = "127.0.0.1:1"\n')
    settings = Settings.load(
        config_file=config, env={"AUTHQ_LEASE_MS": "2000"}, overrides={"listen": "0.0.0.0:2"}
    )
    assert (settings.lease_ms, settings.listen) == (2000, "0.0.0.0:2")
    config.write_text("[server]\nlease_msec = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'lease_msec'"):
        Settings.load(config_file=config)
    with pytest.raises(SettingsError, match="lease_ms: invalid literal"):
        Settings.load(env={"AUTHQ_LEASE_MS": "soon"})
    with pytest.raises(SettingsError, match="importance_step_ms"):
        Settings.load(overrides={"importance_step_ms": 100, "urgency_step_ms": 100})

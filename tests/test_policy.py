"""The authorization policy (R2, R3): catalog, modes, thresholds, regions, validation with
line numbers, and reload that keeps the old policy on a bad file. Pure domain, no server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server.policy.loader import DEFAULT_POLICY, load_policy, parse_policy
from server.policy.model import (
    Basis,
    Mode,
    Policy,
    PolicyError,
    PolicyView,
    UnknownBusinessError,
    UnknownRegionError,
    decide_mode,
    missing_images,
    missing_images_message,
)
from server.policy.reloadable import PolicyHolder

HOURS = """
[hours]
timezone = "Asia/Shanghai"

[hours.center]
mon = ["08:30-17:30"]

[hours.default_branch]
mon = ["09:00-17:00"]
"""

# A small valid file the bad-file cases mutate one line at a time.
BASE = (
    """
[thresholds]
local_currency = "CNY"
local_cash_review_at = "500000.00"
foreign_review_at_usd = "20000.00"

[fx_to_usd]
EUR = "1.08"

[regions.north]
description = "Northern branches"

[regions.north.thresholds]
local_cash_review_at = "300000.00"

[regions.north.modes]
PRECIOUS_METALS = "ONSITE_REVIEW_THEN_CENTRAL"
CASH_DEPOSIT = "ONSITE_ONLY"

[[business]]
code = "CASH_DEPOSIT"
name_zh = "现金存款"
name_en = "Cash deposit"
mode = "DIRECT_CENTRAL"
importance = 2
local_currency_cash = true
required_images = ["ID_FRONT", "VOUCHER"]

[[business]]
code = "LOSS_REPORT"
name_zh = "挂失"
name_en = "Loss report"
mode = "ONSITE_REVIEW_THEN_CENTRAL"
importance = 3
high_risk = true
monetary = false
required_images = [
    "ID_FRONT",
    "VOUCHER",
]

[[business]]
code = "PRECIOUS_METALS"
name_zh = "贵金属"
name_en = "Precious metals"
mode = "DIRECT_CENTRAL"
importance = 1
required_images = ["VOUCHER", "APPLICATION_FORM"]
"""
    + HOURS
)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def view(policy: Policy) -> PolicyView:
    return policy.default


# --- the shipped catalog ----------------------------------------------------------------------


def test_default_policy_covers_the_regulations_business(view: PolicyView) -> None:
    codes = set(view.businesses)
    expected = {
        "ACCOUNT_OPEN", "ACCOUNT_CLOSE", "CASH_DEPOSIT", "CASH_WITHDRAWAL",
        "CASH_TO_ACCOUNT_TRANSFER", "REMITTANCE", "FX_DEPOSIT", "FX_TRANSFER", "LOSS_REPORT",
        "ACCOUNT_ADJUSTMENT", "WEALTH_PURCHASE", "TREASURY_BOND_PURCHASE", "AGENCY_FUND",
        "AGENCY_INSURANCE", "PRECIOUS_METALS", "CARD_CASH_ADVANCE", "CARD_LOSS_REPORT",
        "CARD_PIN_RESET", "CARD_CONTACT_CHANGE", "CASH_REQUISITION", "VOUCHER_REQUISITION",
        "BATCH_PAYROLL",
    }  # fmt: skip
    assert expected <= codes
    # Queue order keys on importance: cash withdrawals and loss reports rank high,
    # investment products low; business without an amount is not monetary.
    assert view.rule("CASH_WITHDRAWAL").importance == 3
    assert view.rule("LOSS_REPORT").importance == 3
    assert view.rule("WEALTH_PURCHASE").importance == 1
    assert view.rule("LOSS_REPORT").monetary is False
    thresholds = view.thresholds
    assert (thresholds.local_currency, str(thresholds.local_cash_review_at)) == (
        "CNY",
        "500000.00",
    )
    assert str(thresholds.foreign_review_at_usd) == "20000.00"


@pytest.mark.parametrize("code", ["CASH_REQUISITION", "VOUCHER_REQUISITION", "BATCH_PAYROLL"])
def test_onsite_only_types_never_go_to_the_center(view: PolicyView, code: str) -> None:
    decision = decide_mode(view, code, 100, "CNY")
    assert decision.mode is Mode.ONSITE_ONLY
    assert decision.basis is Basis.ONSITE_ONLY_TYPE
    assert "authorize it at the branch" in decision.reason
    assert "(R2)" in decision.reason


# --- thresholds (R2) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "mode"),
    [
        (50_000_000, Mode.ONSITE_REVIEW_THEN_CENTRAL),  # exactly 500,000.00: at => review
        (49_999_999, Mode.DIRECT_CENTRAL),  # 499,999.99
        (0, Mode.DIRECT_CENTRAL),
    ],
)
def test_local_cash_threshold(view: PolicyView, amount_minor: int, mode: Mode) -> None:
    decision = decide_mode(view, "CASH_WITHDRAWAL", amount_minor, "CNY")
    assert decision.mode is mode
    assert "500,000.00 CNY" in decision.reason
    if mode is Mode.ONSITE_REVIEW_THEN_CENTRAL:
        assert decision.basis is Basis.LOCAL_CASH_THRESHOLD
        assert "recount the cash" in decision.reason


def test_cash_threshold_does_not_apply_to_non_cash_business(view: PolicyView) -> None:
    decision = decide_mode(view, "WEALTH_PURCHASE", 100_000_000, "CNY")
    assert decision.mode is Mode.DIRECT_CENTRAL
    assert "not local-currency cash business" in decision.reason


@pytest.mark.parametrize(
    ("code", "amount_minor", "currency", "mode"),
    [
        ("FX_DEPOSIT", 2_000_000, "USD", Mode.ONSITE_REVIEW_THEN_CENTRAL),  # 20,000.00
        ("FX_DEPOSIT", 1_999_999, "USD", Mode.DIRECT_CENTRAL),  # 19,999.99
        ("FX_TRANSFER", 1_851_852, "EUR", Mode.ONSITE_REVIEW_THEN_CENTRAL),  # ~20,000.0016 USD
        ("FX_TRANSFER", 1_851_851, "EUR", Mode.DIRECT_CENTRAL),  # ~19,999.9908 USD
        ("REMITTANCE", 2_985_075, "JPY", Mode.ONSITE_REVIEW_THEN_CENTRAL),  # no minor unit
        ("REMITTANCE", 2_985_074, "JPY", Mode.DIRECT_CENTRAL),
    ],
)
def test_foreign_threshold_in_usd(
    view: PolicyView, code: str, amount_minor: int, currency: str, mode: Mode
) -> None:
    decision = decide_mode(view, code, amount_minor, currency)
    assert decision.mode is mode
    assert "20,000.00 USD" in decision.reason
    if mode is Mode.ONSITE_REVIEW_THEN_CENTRAL:
        assert decision.basis is Basis.FOREIGN_THRESHOLD


def test_converted_amount_is_shown_to_the_teller(view: PolicyView) -> None:
    decision = decide_mode(view, "FX_TRANSFER", 1_851_852, "EUR")
    assert "18,518.52 EUR (about 20,000.00 USD)" in decision.reason


@pytest.mark.parametrize("currency", ["THB", "XYZ"])
def test_foreign_currency_without_a_rate_needs_review(view: PolicyView, currency: str) -> None:
    decision = decide_mode(view, "FX_DEPOSIT", 1, currency)
    assert decision.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL
    assert decision.basis is Basis.NO_FX_RATE
    assert f"no indicative USD rate for {currency}" in decision.reason


def test_foreign_amount_on_a_local_only_type_needs_review(view: PolicyView) -> None:
    decision = decide_mode(view, "CASH_WITHDRAWAL", 100, "USD")
    assert decision.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL
    assert decision.basis is Basis.FOREIGN_NOT_CONFIGURED


@pytest.mark.parametrize("code", ["LOSS_REPORT", "ACCOUNT_ADJUSTMENT"])
def test_high_risk_types_need_review_whatever_the_amount(view: PolicyView, code: str) -> None:
    decision = decide_mode(view, code, 1, "CNY")
    assert decision.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL
    assert decision.basis is Basis.HIGH_RISK
    assert "high-risk" in decision.reason


def test_low_risk_business_without_amount_goes_direct(view: PolicyView) -> None:
    decision = decide_mode(view, "CARD_PIN_RESET", 0, "CNY")
    assert decision.mode is Mode.DIRECT_CENTRAL
    assert decision.basis is Basis.DIRECT


def test_unknown_business_and_negative_amount_are_refused(view: PolicyView) -> None:
    with pytest.raises(UnknownBusinessError, match="NO_SUCH_TYPE"):
        decide_mode(view, "NO_SUCH_TYPE", 1, "CNY")
    with pytest.raises(ValueError, match="negative"):
        decide_mode(view, "CASH_DEPOSIT", -1, "CNY")


# --- regions --------------------------------------------------------------------------------


def test_region_overrides_thresholds_and_modes() -> None:
    policy = parse_policy(BASE)
    north = policy.for_region("north")
    assert north.region == "north"
    assert policy.for_region(None) is policy.default
    assert policy.for_region("") is policy.default

    at_300k = 30_000_000
    assert decide_mode(policy.default, "CASH_DEPOSIT", at_300k, "CNY").mode is Mode.DIRECT_CENTRAL
    assert decide_mode(north, "CASH_DEPOSIT", at_300k, "CNY").mode is Mode.ONSITE_ONLY
    default_metals = decide_mode(policy.default, "PRECIOUS_METALS", 1, "CNY")
    assert default_metals.mode is Mode.DIRECT_CENTRAL
    north_metals = decide_mode(north, "PRECIOUS_METALS", 1, "CNY")
    assert north_metals.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL
    assert north_metals.basis is Basis.REVIEW_TYPE
    assert "region north" in north_metals.reason
    # Untouched settings are inherited.
    assert north.thresholds.foreign_review_at_usd == policy.default.thresholds.foreign_review_at_usd
    assert north.fx_to_usd == policy.default.fx_to_usd


def test_region_threshold_applies_only_in_its_region() -> None:
    text = BASE.replace('CASH_DEPOSIT = "ONSITE_ONLY"\n', "")
    policy = parse_policy(text)
    north = policy.for_region("north")
    review = decide_mode(north, "CASH_DEPOSIT", 30_000_000, "CNY")
    assert review.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL
    assert "300,000.00 CNY" in review.reason
    below = decide_mode(north, "CASH_DEPOSIT", 29_999_999, "CNY")
    assert below.mode is Mode.DIRECT_CENTRAL


def test_unknown_region_is_an_error_not_the_default() -> None:
    policy = parse_policy(BASE)
    with pytest.raises(UnknownRegionError, match="south"):
        policy.for_region("south")


# --- images (R3) ----------------------------------------------------------------------------


def test_missing_images(view: PolicyView) -> None:
    assert missing_images(view, "CASH_WITHDRAWAL", ["ID_FRONT", "ID_BACK", "VOUCHER"]) == []
    assert missing_images(view, "CASH_WITHDRAWAL", ["ID_FRONT"]) == ["ID_BACK", "VOUCHER"]
    assert missing_images(view, "ACCOUNT_OPEN", []) == [
        "ID_FRONT",
        "ID_BACK",
        "VOUCHER",
        "CUSTOMER_PHOTO",
    ]


def test_application_form_stands_in_for_the_voucher(view: PolicyView) -> None:
    present = ["ID_FRONT", "ID_BACK", "APPLICATION_FORM"]
    assert missing_images(view, "CASH_WITHDRAWAL", present) == []
    assert missing_images(view, "CASH_WITHDRAWAL", ["ID_FRONT", "ID_BACK"]) == ["VOUCHER"]
    message = missing_images_message(["VOUCHER"])
    assert "VOUCHER (or APPLICATION_FORM)" in message
    assert "(R3)" in message


def test_a_required_form_does_not_also_count_as_the_voucher() -> None:
    view = parse_policy(BASE).default  # PRECIOUS_METALS requires VOUCHER and APPLICATION_FORM
    assert missing_images(view, "PRECIOUS_METALS", ["APPLICATION_FORM"]) == ["VOUCHER"]
    assert missing_images(view, "PRECIOUS_METALS", ["VOUCHER", "APPLICATION_FORM"]) == []


# --- bad files are refused with the line and the reason -------------------------------------

BAD_FILES = [
    # (replace this, with this, line marker, reason)
    ('mode = "DIRECT_CENTRAL"', 'mode = "SOMETIMES"', "SOMETIMES", "unknown mode 'SOMETIMES'"),
    ("importance = 2", "importance = 4", "importance = 4", "importance must be one of 1, 2, 3"),
    ("importance = 2", "importance = true", "importance = true", "importance must be one of"),
    ('"ID_FRONT", "VOUCHER"]', '"ID_FRONT", "SELFIE"]', "SELFIE", "unknown image kind 'SELFIE'"),
    ('    "VOUCHER",\n]', '    "VOUCHER",\n    "SCAN",\n]', "SCAN", "unknown image kind"),
    ('code = "LOSS_REPORT"', 'code = "CASH_DEPOSIT"  # dup', "# dup", "listed twice"),
    ('"500000.00"', '"500,000.00"', "500,000.00", "must be a decimal string"),
    ('"500000.00"', "500000.00", "= 500000.00", "must be a decimal string"),
    ('"500000.00"', '"-1.00"', "-1.00", "must not be negative"),
    ('"500000.00"', '"500000.001"', "500000.001", "more than 2 decimals"),
    ('EUR = "1.08"', 'EUR = "0"', 'EUR = "0"', "must be above zero"),
    ('EUR = "1.08"', 'EURO = "1.08"', "EURO", "not a known non-USD currency"),
    ("local_currency_cash = true", "cash = true", "cash = true", "unknown key 'cash'"),
    ("[thresholds]\nlocal", "colour = 1\n[thresholds]\nlocal", "colour", "unknown key 'colour'"),
    ('local_currency = "CNY"', 'currency = "CNY"', 'currency = "CNY"', "unknown key 'currency'"),
    ("high_risk = true", "high_risk = yes", "yes", "not valid TOML"),
    (
        'mode = "ONSITE_REVIEW_THEN_CENTRAL"',
        'mode = "DIRECT_CENTRAL"  # risky',
        "# risky",
        "a high-risk type cannot be DIRECT_CENTRAL",
    ),
    (
        'PRECIOUS_METALS = "ONSITE_REVIEW_THEN_CENTRAL"',
        'LOSS_REPORT = "DIRECT_CENTRAL"',
        'LOSS_REPORT = "DIRECT',
        "LOSS_REPORT is high-risk",
    ),
    ('PRECIOUS_METALS = "ONSITE', 'GOLD = "ONSITE', "GOLD", "unknown business code 'GOLD'"),
    ("[regions.north.thresholds]", "[regions.north.limits]", "limits", "unknown key 'limits'"),
    (
        'local_cash_review_at = "300000.00"',
        'local_currency = "HKD"',
        "[regions.north.thresholds]",
        "a new local_currency needs its own local_cash_review_at",
    ),
    ('name_en = "Cash deposit"\n', "", "[[business]] CASH_DEPOSIT", "missing name_en"),
    (
        "monetary = false",
        "monetary = false\nlocal_currency_cash = true",
        "[[business]] LOSS_REPORT",
        "monetary = false has no amount",
    ),
]


@pytest.mark.parametrize(("old", "new", "marker", "reason"), BAD_FILES)
def test_bad_policy_is_refused_with_line_and_reason(
    old: str, new: str, marker: str, reason: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.toml")
    error = caught.value
    lines = text.splitlines()
    if marker.startswith("[[business]] "):  # the header just above the entry's code line
        expected = lines.index(f'code = "{marker.split()[1]}"')
    else:
        expected = next(n for n, line in enumerate(lines, 1) if marker in line)
    assert (error.line, reason in error.reason) == (expected, True), str(error)
    assert str(error).startswith(f"policy.toml:{expected}: ")


def test_structural_faults_without_a_line_still_give_the_reason() -> None:
    with pytest.raises(PolicyError, match=r"no \[\[business\]\] entries"):
        parse_policy(HOURS)
    no_hours = BASE.replace(HOURS, "")
    with pytest.raises(PolicyError, match=r"needs an \[hours\] table"):
        parse_policy(no_hours)
    with pytest.raises(PolicyError, match="not UTF-8"):
        parse_policy(b"# \xff\n", "p.toml")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(Path("/nonexistent/policy.toml"))


def test_base_file_is_valid() -> None:
    assert set(parse_policy(BASE).default.businesses) == {
        "CASH_DEPOSIT",
        "LOSS_REPORT",
        "PRECIOUS_METALS",
    }


# --- reload ---------------------------------------------------------------------------------


def test_reload_swaps_a_valid_file_and_keeps_the_old_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(BASE, encoding="utf-8")
    holder = PolicyHolder.from_file(path)
    first = holder.policy
    assert holder.version == 1
    assert holder.sha256 == hashlib.sha256(BASE.encode()).hexdigest()

    path.write_text(BASE.replace('mode = "DIRECT_CENTRAL"', 'mode = "MAYBE"', 1), "utf-8")
    with pytest.raises(PolicyError, match="unknown mode"):
        holder.reload()
    assert holder.policy is first
    assert holder.version == 1
    assert holder.sha256 == hashlib.sha256(BASE.encode()).hexdigest()

    changed = BASE.replace('"500000.00"', '"400000.00"')
    path.write_text(changed, encoding="utf-8")
    new = holder.reload()
    assert holder.policy is new
    assert str(new.default.thresholds.local_cash_review_at) == "400000.00"
    assert (holder.version, holder.sha256) == (2, hashlib.sha256(changed.encode()).hexdigest())

    # Reloading the same text changes nothing; a missing file keeps the policy in force.
    assert holder.reload() is new
    assert holder.version == 2
    with pytest.raises(PolicyError, match="cannot read"):
        holder.reload(tmp_path / "gone.toml")
    assert holder.loaded.policy is new
    assert holder.loaded.source == str(path)


def test_a_prepared_policy_is_in_force_only_once_put_and_only_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(BASE, encoding="utf-8")
    holder = PolicyHolder.from_file(path)
    assert holder.prepare() is holder.loaded  # the same file: nothing to put in force
    path.write_text(BASE.replace('"500000.00"', '"400000.00"'), encoding="utf-8")
    first, second = holder.prepare(), holder.prepare()
    assert (holder.version, first.version) == (1, 2)  # prepared, not in force
    holder.put_in_force(first)
    assert holder.loaded is first
    # Another reload prepared from version 1 would hand out version 2 again.
    with pytest.raises(PolicyError, match="version 2 came into force meanwhile"):
        holder.put_in_force(second)
    assert holder.loaded is first


def test_holder_loads_the_shipped_policy() -> None:
    holder = PolicyHolder.from_file()
    assert holder.loaded.source == str(DEFAULT_POLICY)
    assert holder.sha256 == hashlib.sha256(DEFAULT_POLICY.read_bytes()).hexdigest()

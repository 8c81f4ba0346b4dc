"""Account and branch administration: each change is one step in Redis with its audit
record (R11, R12, R15), and ids that could not name a person or a branch are refused."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from server.accounts.model import Qualification, Role, Status
from server.accounts.store import AccountStore, token_digest
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.policy.enrollment import Enrollment, EnrollmentStatus
from server.store.audit import AuditEntry, AuditLog
from server.store.audit_records import StagedAudit
from server.store.branches import BranchDirectory
from server.store.keys import Keys
from tests.test_admin_cli import admin

PASSWORD = "initial-pass-1"


def record(action: str, target: str) -> StagedAudit:
    entry = AuditEntry(actor="authq-admin:test", role="ADMIN", origin="cli", action=action,
                       target=target)  # fmt: skip
    return StagedAudit(entry.pack())


async def staged_actions(client: aioredis.Redis) -> list[str]:
    staged = await AuditLog(client).read_staged(100)
    return [AuditEntry.unpack(body).action for _, body in staged]


async def test_an_account_is_created_whole_with_its_record_or_not_at_all(
    redis_client: aioredis.Redis,
) -> None:
    accounts = AccountStore(redis_client, Keys())
    await accounts.create_branch("branch-1", "Branch 1", "east", record("BRANCH_CREATE", "b"))
    first = record("ACCOUNT_CREATE", "teller-1")
    await accounts.create_user("teller-1", "T. One", [Role.TELLER], PASSWORD,
                               branch_id="branch-1", audit=first)  # fmt: skip
    assert first.staged
    created = await accounts.get("teller-1")
    assert (created.name, created.branch_id) == ("T. One", "branch-1")
    assert created.roles == {Role.TELLER}
    assert [a.user_id for a in await accounts.list()] == ["teller-1"]

    again = record("ACCOUNT_CREATE", "teller-1")
    with pytest.raises(AlreadyExists, match="teller-1"):
        await accounts.create_user("teller-1", "Someone Else", [Role.TELLER], PASSWORD,
                                   branch_id="branch-1", audit=again)  # fmt: skip
    assert not again.staged
    assert (await accounts.get("teller-1")).name == "T. One"
    assert await staged_actions(redis_client) == ["BRANCH_CREATE", "ACCOUNT_CREATE"]


async def test_a_branch_is_created_once_with_its_region(redis_client: aioredis.Redis) -> None:
    accounts = AccountStore(redis_client, Keys())
    await accounts.create_branch("branch-2", "Branch 2", "west", record("BRANCH_CREATE", "b"))
    with pytest.raises(AlreadyExists, match="branch-2"):
        await accounts.create_branch("branch-2", "Other", "east", record("BRANCH_CREATE", "b"))
    facts = await BranchDirectory(redis_client, Keys(), cache_ms=0).facts("branch-2")
    assert facts.region == "west"
    assert await redis_client.smembers(Keys().branches) == {b"branch-2"}
    assert await staged_actions(redis_client) == ["BRANCH_CREATE"]


@pytest.mark.parametrize(
    ("user_id", "name", "field"),
    [
        ("", "N", "user_id"),
        ("two words", "N", "user_id"),
        ("a:b", "N", "user_id"),
        ("-lead", "N", "user_id"),
        ("x" * 65, "N", "user_id"),
        ("system", "N", "user_id"),
        ("System", "N", "user_id"),
        ("auth-9", "  ", "name"),
        ("auth-9", "n" * 101, "name"),
    ],
)
async def test_an_id_or_name_that_cannot_name_a_person_is_refused(
    redis_client: aioredis.Redis, user_id: str, name: str, field: str
) -> None:
    accounts = AccountStore(redis_client, Keys())
    audit = record("ACCOUNT_CREATE", user_id)
    with pytest.raises(InvalidArgument) as refused:
        await accounts.create_user(user_id, name, [Role.AUTHORIZER], PASSWORD, audit=audit)
    assert refused.value.field == field
    assert await accounts.list() == []
    assert await staged_actions(redis_client) == []


async def test_a_branch_id_is_checked_as_a_user_id_is(redis_client: aioredis.Redis) -> None:
    accounts = AccountStore(redis_client, Keys())
    with pytest.raises(InvalidArgument) as refused:
        await accounts.create_branch("branch 3", "Branch 3")
    assert refused.value.field == "branch_id"
    assert not await accounts.branch_exists("branch 3")


async def test_each_change_of_an_account_stages_its_record_with_it(
    redis_client: aioredis.Redis,
) -> None:
    accounts = AccountStore(redis_client, Keys())
    await accounts.create_user("auth-1", "A", [Role.AUTHORIZER], PASSWORD)
    await accounts.set_roles("auth-1", [Role.SUPERVISOR], record("ACCOUNT_ROLES", "auth-1"))
    await accounts.set_qualification("auth-1", Qualification(frozenset({"CASH_DEPOSIT"}), 100),
                                     record("ACCOUNT_QUALIFY", "auth-1"))  # fmt: skip
    await accounts.reset_password("auth-1", "another-pass-2",
                                  record("ACCOUNT_PASSWORD_RESET", "auth-1"))  # fmt: skip
    await accounts.create_branch("branch-4", "Branch 4")
    suspended = Enrollment(EnrollmentStatus.SUSPENDED, frozenset(), "image quality")
    await BranchDirectory(redis_client, Keys(), cache_ms=0).set_enrollment(
        "branch-4", suspended, record("BRANCH_ENROLLMENT", "branch-4")
    )
    account = await accounts.get("auth-1")
    assert account.roles == {Role.SUPERVISOR}
    assert account.qualification.ceiling_minor == 100
    assert account.must_change_password
    assert await staged_actions(redis_client) == [
        "ACCOUNT_ROLES", "ACCOUNT_QUALIFY", "ACCOUNT_PASSWORD_RESET", "BRANCH_ENROLLMENT"
    ]  # fmt: skip

    directory = BranchDirectory(redis_client, Keys(), cache_ms=0)
    reset = record("ACCOUNT_PASSWORD_RESET", "nobody-1")
    for change in (
        accounts.set_roles("nobody-1", [Role.AUTHORIZER], record("ACCOUNT_ROLES", "n")),
        accounts.reset_password("nobody-1", "another-pass-2", reset),
        directory.set_enrollment("branch-none", suspended, record("BRANCH_ENROLLMENT", "n")),
    ):
        with pytest.raises(NotFound):
            await change
    assert len(await staged_actions(redis_client)) == 4


async def test_the_operator_is_told_which_field_is_wrong(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    code, _, err = await admin(redis_url, "user", "create", "system", "--name", "S",
                               "--role", "AUTHORIZER", "--password", PASSWORD)  # fmt: skip
    assert code == 1
    assert "user_id: 'system' is the id the server acts under (R11)" in err
    code, _, err = await admin(redis_url, "branch", "create", "b 1", "--name", "B")
    assert code == 1
    assert "branch_id: 1 to 64 letters" in err
    assert await staged_actions(redis_client) == []
    assert [record async for record in AuditLog(redis_client).read()] == []


async def test_a_deregistered_account_is_kept_as_it_was(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    accounts = AccountStore(redis_client, Keys())
    keys = Keys()
    await accounts.create_user("leaver-2", "L", [Role.AUTHORIZER], PASSWORD,
                               must_change_password=False)  # fmt: skip
    session = await accounts.login("leaver-2", PASSWORD)
    token_key = keys.token(token_digest(session.token))
    assert await redis_client.exists(token_key)
    await accounts.set_status("leaver-2", Status.DEREGISTERED, record("ACCOUNT_REMOVE", "l"))
    # Departure ends every session in the same step (R12).
    assert not await redis_client.exists(token_key, keys.account_tokens("leaver-2"))
    kept = await redis_client.hgetall(keys.account("leaver-2"))
    qualification = Qualification(frozenset({"CASH_DEPOSIT"}), 1)

    for change in (
        accounts.set_roles("leaver-2", [Role.SUPERVISOR], record("ACCOUNT_ROLES", "l")),
        accounts.set_qualification("leaver-2", qualification, record("ACCOUNT_QUALIFY", "l")),
        accounts.reset_password("leaver-2", "another-pass-2", record("ACCOUNT_RESET", "l")),
        accounts.set_status("leaver-2", Status.ACTIVE, record("ACCOUNT_ENABLE", "l")),
        accounts.set_status("leaver-2", Status.DISABLED, record("ACCOUNT_DISABLE", "l")),
        accounts.set_status("leaver-2", Status.DEREGISTERED, record("ACCOUNT_REMOVE", "l")),
    ):
        with pytest.raises(FailedPrecondition, match=r"leaver-2 was deregistered.*\(R12\)"):
            await change
    assert await redis_client.hgetall(keys.account("leaver-2")) == kept
    assert await staged_actions(redis_client) == ["ACCOUNT_REMOVE"]

    code, _, err = await admin(redis_url, "user", "roles", "leaver-2", "--role", "SUPERVISOR")
    assert code == 1
    assert "never changes again (R12)" in err
    assert await staged_actions(redis_client) == ["ACCOUNT_REMOVE"]


async def test_branch_roles_need_a_branch(redis_client: aioredis.Redis) -> None:
    accounts = AccountStore(redis_client, Keys())
    await accounts.create_user("auth-5", "A", [Role.AUTHORIZER], PASSWORD)
    for roles in ([Role.TELLER], [Role.ONSITE_REVIEWER]):
        with pytest.raises(InvalidArgument, match="branch staff need a branch") as refused:
            await accounts.set_roles("auth-5", roles, record("ACCOUNT_ROLES", "auth-5"))
        assert refused.value.field == "roles"
    assert (await accounts.get("auth-5")).roles == {Role.AUTHORIZER}
    assert await staged_actions(redis_client) == []


async def test_the_store_refuses_a_qualification_naming_the_field_and_the_rule(
    redis_client: aioredis.Redis,
) -> None:
    accounts = AccountStore(redis_client, Keys())
    await accounts.create_user("auth-6", "A", [Role.AUTHORIZER], PASSWORD)
    for qualification, field, rule in (
        (Qualification(frozenset({"CASH_WITHDRAWL"}), 0), "types", "the valid ones are"),
        (Qualification(frozenset({"*", "FOO"}), 0), "types", "unknown business type 'FOO'"),
        (Qualification(frozenset({"CASH_DEPOSIT"}), -500), "ceiling", "0 for no ceiling"),
        (Qualification(frozenset({"CASH_DEPOSIT"}), 2**63), "ceiling", "at most"),
    ):
        with pytest.raises(InvalidArgument, match=rule) as refused:
            await accounts.set_qualification("auth-6", qualification,
                                             record("ACCOUNT_QUALIFY", "auth-6"))  # fmt: skip
        assert refused.value.field == field
        with pytest.raises(InvalidArgument) as refused:
            await accounts.create_user("auth-7", "A", [Role.AUTHORIZER], PASSWORD,
                                       qualification=qualification)  # fmt: skip
        assert refused.value.field == field
    assert (await accounts.get("auth-6")).qualification == Qualification()
    assert [account.user_id for account in await accounts.list()] == ["auth-6"]
    assert await staged_actions(redis_client) == []


async def test_the_store_takes_the_business_types_of_the_policy_in_force(
    redis_client: aioredis.Redis,
) -> None:
    catalog = {"GOLD_BAR_SALE"}
    accounts = AccountStore(redis_client, Keys(), business_types=lambda: catalog)
    gold = Qualification(frozenset({"GOLD_BAR_SALE"}))
    await accounts.create_user("auth-8", "A", [Role.AUTHORIZER], PASSWORD, qualification=gold)
    # A reloaded policy applies at once.
    catalog.add("CASH_DEPOSIT")
    await accounts.set_qualification("auth-8", Qualification(frozenset({"CASH_DEPOSIT"})))
    catalog.clear()
    with pytest.raises(InvalidArgument, match="unknown business type 'CASH_DEPOSIT'"):
        await accounts.set_qualification("auth-8", Qualification(frozenset({"CASH_DEPOSIT"})))
    assert (await accounts.get("auth-8")).qualification.business_types == {"CASH_DEPOSIT"}

"""authq-sim against a real server: a short bounded run submits requests from several
branches and its simulated authorizers decide them (and the tellers supply what is
asked for)."""

from __future__ import annotations

import pytest

from server.accounts.model import Role
from teller_client.simulator import Options, build_parser, options_from, simulate
from tests.conftest import PASSWORD, RunningServer


async def test_a_short_run_submits_and_decides(server: RunningServer) -> None:
    for teller, branch in (("teller-1", "branch-1"), ("teller-2", "branch-2")):
        await server.account(teller, [Role.TELLER], branch)
    for authorizer in ("authorizer-1", "authorizer-2"):
        await server.account(authorizer, [Role.AUTHORIZER])
    stats = await simulate(
        Options(
            target=server.target,
            password=PASSWORD,
            tellers=("teller-1", "teller-2"),
            authorizers=("authorizer-1", "authorizer-2"),
            count=6,
            duration_s=60,
            teller_think_s=0.05,
            review_s=0.05,
            seed=7,
            quiet=True,
        )
    )
    assert stats.submitted == 6, stats.as_dict()
    assert stats.refused == 0, stats.errors
    # Every submission ended decided; rejections and supplement rounds included.
    assert stats.outcomes["APPROVED"] + stats.outcomes["REJECTED"] == 6, stats.as_dict()
    assert sum(stats.decisions_by_simulated.values()) >= 6
    assert stats.supplied == stats.outcomes["SUPPLEMENT_REQUESTED"]
    overview = await server.runtime.store.overview()
    assert overview.waiting == 0
    assert overview.counts.get("APPROVED", 0) + overview.counts.get("REJECTED", 0) == 6


def test_a_run_must_be_bounded() -> None:
    with pytest.raises(ValueError, match="bounded"):
        options_from(build_parser().parse_args([]))
    options = options_from(build_parser().parse_args(["--count", "3", "--authorizers", "2"]))
    assert options.authorizers == ("authorizer-1", "authorizer-2")
    assert options.count == 3
    assert options.tellers == tuple(f"teller-{n}" for n in range(1, 9))

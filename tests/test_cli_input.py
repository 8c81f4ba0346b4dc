"""What the command lines take from the person: amounts, image hashes as the text
output shows them, and a server address without a port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from authq.channel import open_channel
from authq.image_cli import unique_match

from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request
from tests.test_cli import _cli_env, run_cli
from tests.test_local_fallback import nothing_listening

SUBMIT = ("submit", "--type", "CASH_WITHDRAWAL", "--account", "6222020200001234",
          "--customer", "Zhang San")  # fmt: skip


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("Infinity", "is not a number"),
        ("nan", "is not a number"),
        ("twelve", "is not a number"),
        ("1e30", "is too large"),
        ("92233720368547758.08", "is too large"),
        ("-5", "is not positive"),
        ("0", "is not positive"),
        ("1.0000000000000000000000000001", "has more than 2 decimals"),
    ],
)
async def test_a_bad_amount_is_a_one_line_usage_error(
    tmp_path: Path, amount: str, why: str
) -> None:
    # Refused before anything is sent: not even an unreachable center's fallback
    # journal gets it.
    env = {"AUTHQ_SERVER": nothing_listening(), "AUTHQ_STATE_DIR": str(tmp_path),
           "AUTHQ_PASSWORD": PASSWORD}  # fmt: skip
    code, out, err = await run_cli("teller_client.cli", *SUBMIT, "--amount", amount, env=env)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(f"authq-teller: --amount {amount!r} {why}")
    assert "give a positive amount with at most 2 decimals for CNY, up to " in err
    assert "92,233,720,368,547,758.07" in err
    assert out == ""
    assert not (tmp_path / "fallback-journal.jsonl").exists()


async def test_text_shows_image_hashes_the_image_commands_take(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    async with server.teller() as teller:
        submitted = await teller.submit(request())
    rid = submitted.request.request_id
    shas = [image.sha256 for image in submitted.request.images]

    code, shown, err = await run_cli("teller_client.cli", "show", rid, env=env)
    assert code == 0, err
    for sha in shas:
        assert sha[:12] in shown
    code, out, err = await run_cli(
        "teller_client.cli", "image", rid, shas[1][:8], "--rendition", "original",
        "--out", str(tmp_path / "teller.jpg"), env=env,
    )  # fmt: skip
    assert code == 0, err
    assert f"original of {shas[1][:12]} written to" in out

    code, taken, err = await run_cli(
        "authorizer_console.cli", "next", "--images-dir", str(tmp_path / "got"),
        "--timeout", "10", env=env,
    )  # fmt: skip
    assert code == 0, err
    prefix = shas[2][:10].upper()
    assert prefix.lower() in taken
    code, out, err = await run_cli(
        "authorizer_console.cli", "image", rid, prefix, "--out", str(tmp_path / "held.jpg"),
        env=env,
    )  # fmt: skip
    assert code == 0, err
    assert f"preview of {shas[2][:12]} written to" in out

    unknown = "0123456789"
    assert not any(sha.startswith(unknown) for sha in shas)
    for module in ("teller_client.cli", "authorizer_console.cli"):
        code, _, err = await run_cli(module, "image", rid, unknown, "--out", str(tmp_path / "x"),
                                     env=env)  # fmt: skip
        assert code == 2
        assert f"no image of {rid} has a sha256 starting with {unknown}" in err
        code, _, err = await run_cli(module, "image", rid, shas[0][:7], "--out", "x", env=env)
        assert code == 2
        assert "give at least 8 hex digits" in err


def test_a_prefix_matching_several_images_is_refused() -> None:
    listed = ["abcdef01" + "0" * 56, "abcdef01" + "1" * 56, "abcdef02" + "2" * 56]
    assert unique_match("r-1", "abcdef011", listed) == listed[1]
    with pytest.raises(ValueError, match=r"abcdef01 matches 2 images of r-1 .*give more digits"):
        unique_match("r-1", "abcdef01", listed)


def test_a_server_without_a_port_means_authqs_port(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[str] = []

    def channel(target: str, *args: Any, **kwargs: Any) -> None:
        dialled.append(target)

    monkeypatch.setattr(grpc.aio, "insecure_channel", channel)
    given = {
        "127.0.0.1": "127.0.0.1:50051",
        "authq.example": "authq.example:50051",
        "[::1]": "[::1]:50051",
        "::1": "[::1]:50051",
        "127.0.0.1:6000": "127.0.0.1:6000",
        "[::1]:6000": "[::1]:6000",
        "dns:///authq.example:6000": "dns:///authq.example:6000",
    }
    for target in given:
        open_channel(target)
    assert dialled == list(given.values())

"""bench/locustfile.py, what a load tester runs by hand (issue 5), works against a fresh
server as `make run` starts it: its teller and authorizer users run headless for a few
seconds, every kind of call happens, and none fails."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import free_port, start_server_process

CALLS = ("Submit", "UploadImage 200 KB", "Submit 1 image", "Next", "Decide")


@pytest.mark.slow
def test_locust_users_work_against_a_fresh_server(tmp_path: Path) -> None:
    port = free_port()
    server = start_server_process(tmp_path / "data", port)
    prefix = tmp_path / "locust"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", "bench/locustfile.py",
             "--host", f"127.0.0.1:{port}", "--headless", "--users", "4",
             "--spawn-rate", "4", "--run-time", "5s", "--only-summary",
             "--csv", str(prefix)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    failures = {name: row["Failure Count"] for name, row in rows.items()
                if row["Failure Count"] != "0"}  # fmt: skip
    assert not failures, f"{failures}\n{run.stderr[-3000:]}"
    assert run.returncode == 0, run.stderr[-3000:]
    for name in CALLS:
        assert int(rows[name]["Request Count"]) > 0, f"no {name} call: {sorted(rows)}"

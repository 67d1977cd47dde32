"""The golden master is only useful if two runs of the same code record the same thing."""

from __future__ import annotations

import json
import sys

from tests.golden.golden import ROOT_OF_REPO, run


def test_two_runs_of_the_same_code_record_the_same_session() -> None:
    first = run(ROOT_OF_REPO, sys.executable)
    second = run(ROOT_OF_REPO, sys.executable)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    # It must record something worth comparing: every step, no server error, real rows.
    statuses = [step["status"] for step in first["session"] if "scim" in step]
    assert len(statuses) >= 30
    assert all(status < 500 for status in statuses), statuses
    assert {400, 401, 404, 409} <= set(statuses)
    assert all(step["exit"] == 0 for step in first["session"] if "cli" in step)
    users = next(
        s["stdout"] for s in first["session"] if s.get("cli") == ["users", "list", "--tenant", "acme", "--json"]
    )
    assert {u["userName"] for u in users} >= {"alice@acme.example", "bob@acme.example"}
    assert len(first["tables"]["accounts"]) > 50

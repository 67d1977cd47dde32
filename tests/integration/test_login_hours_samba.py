"""AD's logonHours against a real Samba AD DC (issue 19): the bit order bridge decodes is the one
the directory itself enforces.

The proof does not rely on bridge's own encoder agreeing with its decoder: Samba refuses a simple
bind outside a user's logonHours (source4/auth/sam.c, logon_hours_ok; AD's "data 530"). The test
writes the bit bridge says is "now" and Samba lets the user in; it writes every bit but that one
and Samba refuses. A reversed bit order or a week that did not start on Sunday 00:00 UTC would
fail one of the two. Then a sync reads the values and shows the decoded UTC windows.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ldap3 import MODIFY_REPLACE, Connection, Server

from bridge.core.login_hours import DAY_NAMES, encode_logon_hours
from tests.fixtures.samba import SambaDC
from tests.integration.test_sync_samba import Directory, deployment

PASSWORD = "Hours!Passw0rd-2026"


@pytest.fixture
def hours_ou(samba_dc: SambaDC) -> Iterator[Directory]:
    ou = samba_dc.new_ou("hours")
    yield Directory(samba_dc, ou, tag=ou.split(",")[0][3:])


def only_now(now: datetime) -> bytes:
    return encode_logon_hours([(now.weekday(), now.hour, now.hour + 1)])


def all_but_now(now: datetime) -> bytes:
    return bytes(b ^ 0xFF for b in only_now(now))


def binds(dc: SambaDC, sam: str) -> tuple[bool, str]:
    conn = Connection(Server(dc.url, connect_timeout=2), f"{sam}@example.test", PASSWORD, raise_exceptions=False)
    try:
        ok = conn.bind()
        return ok, str(conn.result.get("message", ""))
    finally:
        conn.unbind()


def set_logon_hours(conn: Connection, dn: str, raw: bytes) -> None:
    assert conn.modify(dn, {"logonHours": [(MODIFY_REPLACE, [raw])]}), conn.result


def test_samba_enforces_the_hours_bridge_decodes_and_a_sync_shows_them(
    hours_ou: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dc = hours_ou.dc
    worker, never, free, weekdays, plain = (hours_ou.sam(n) for n in ("worker", "never", "free", "weekdays", "plain"))
    conn = dc.connect()
    try:
        worker_dn = dc.add_user(conn, hours_ou.ou, worker)
        dc.add_user(conn, hours_ou.ou, never, logonHours=bytes(21))
        dc.add_user(conn, hours_ou.ou, free, logonHours=b"\xff" * 21)
        weekdays_dn = dc.add_user(
            conn, hours_ou.ou, weekdays, logonHours=encode_logon_hours([(d, 8, 17) for d in range(5)])
        )
        dc.add_user(conn, hours_ou.ou, plain)
        dc.add_group(conn, hours_ou.ou, "staff", [weekdays_dn])
        setpassword = subprocess.run(
            [dc.samba_tool_bin, "user", "setpassword", worker, f"--newpassword={PASSWORD}", "-s", str(dc.conf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert setpassword.returncode == 0, setpassword.stderr
        assert binds(dc, worker)[0]  # no logonHours yet: any time

        # The hour could turn between writing and binding: then the pair is tried again.
        for _ in range(3):
            now = datetime.now(UTC)
            set_logon_hours(conn, worker_dn, only_now(now))
            inside = binds(dc, worker)
            set_logon_hours(conn, worker_dn, all_but_now(now))
            outside = binds(dc, worker)
            if datetime.now(UTC).hour == now.hour:
                break
        assert inside[0], f"Samba refused the hour bridge encodes as now: {inside[1]}"
        assert not outside[0] and "530" in outside[1], f"Samba allowed an hour bridge left out: {outside}"
        set_logon_hours(conn, worker_dn, only_now(now))
    finally:
        conn.unbind()

    deploy = deployment(tmp_path, hours_ou, monkeypatch)
    deploy.add_to_mapping(
        '[[login_hours]]\ngroup_name = "staff"\ndays = "mon-sun"\nhours = "07:00-19:00"\ntime_zone = "Europe/Paris"\n'
    )
    out = deploy.sync()
    assert out["exit"] == 0 and out["errors"] == [], out
    users = deploy.users()
    end = f"{now.hour + 1:02d}:00" if now.hour < 23 else "24:00"
    assert users[worker]["loginHours"] == {
        "logonHours": [{"days": DAY_NAMES[now.weekday()], "hours": f"{now.hour:02d}:00-{end}", "time_zone": "UTC"}]
    }
    assert users[never]["loginHours"] == {"logonHours": []}
    assert users[free]["loginHours"] is None
    assert users[plain]["loginHours"] is None
    # AD's hours and the mapping's both apply.
    assert users[weekdays]["loginHours"] == {
        "mapping": [{"days": "mon-sun", "hours": "07:00-19:00", "time_zone": "Europe/Paris"}],
        "logonHours": [{"days": "mon-fri", "hours": "08:00-17:00", "time_zone": "UTC"}],
    }

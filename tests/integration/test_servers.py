"""The server fixtures themselves: each must be a real server behaving like production."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Callable
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from ldap3 import BASE, MODIFY_REPLACE, Connection

from tests.fixtures.postgres import PgCluster
from tests.fixtures.slapd import LdifError, Slapd
from tests.fixtures.smtp import SmtpServer

ALICE = "uid=alice,ou=people,dc=example,dc=org"
ALICE_LDIF = f"""\
dn: {ALICE}
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
mail: alice@example.org
userPassword: right-password
"""


def read_entry(conn: Connection, dn: str, *attrs: str) -> dict[str, list[str]]:
    assert conn.search(dn, "(objectClass=*)", BASE, attributes=list(attrs)), conn.result
    return {k: list(v) for k, v in conn.response[0]["attributes"].items()}


def can_bind(server: Slapd, dn: str, password: str) -> bool:
    conn = Connection(server.url, dn, password)
    ok = bool(conn.bind())
    conn.unbind()
    return ok


# -- slapd -----------------------------------------------------------------------------


def test_slapd_accepts_admin_bind_and_an_add_with_entry_uuid(slapd: Slapd) -> None:
    conn = slapd.connect()
    assert conn.extend.standard.who_am_i() == f"dn:{slapd.bind_dn}"
    assert conn.add(ALICE, ["inetOrgPerson"], {"uid": "alice", "cn": "Alice", "sn": "Example"}), conn.result

    entry = read_entry(conn, ALICE, "uid", "entryUUID", "modifyTimestamp")
    assert entry["uid"] == ["alice"]
    assert len(entry["entryUUID"][0]) == 36
    assert entry["modifyTimestamp"]
    conn.unbind()


def test_slapd_starts_with_base_entries_and_password_policy(slapd: Slapd) -> None:
    conn = slapd.connect()
    for dn in (slapd.base_dn, slapd.people_dn, slapd.groups_dn, slapd.policy_dn):
        assert conn.search(dn, "(objectClass=*)", BASE), dn
    policy = read_entry(conn, slapd.policy_dn, "pwdMaxFailure", "pwdLockout")
    assert policy == {"pwdMaxFailure": ["5"], "pwdLockout": ["TRUE"]}
    conn.unbind()


def test_memberof_overlay_fills_member_of_when_user_joins_a_group(slapd: Slapd) -> None:
    group = "cn=staff,ou=groups,dc=example,dc=org"
    slapd.add_ldif(ALICE_LDIF + f"\ndn: {group}\nobjectClass: groupOfNames\ncn: staff\nmember: {ALICE}\n")

    conn = slapd.connect()
    assert read_entry(conn, ALICE, "memberOf")["memberOf"] == [group]
    conn.unbind()


def test_add_ldif_raises_on_rejected_records_and_tolerates_existing_only_when_asked(
    slapd: Slapd,
) -> None:
    slapd.add_ldif(ALICE_LDIF)
    with pytest.raises(LdifError) as exc:
        slapd.add_ldif(ALICE_LDIF)
    assert [code for code, _, _ in exc.value.errors] == [68]

    slapd.add_ldif(ALICE_LDIF, ignore_existing=True)

    with pytest.raises(LdifError, match="Object class violation"):
        slapd.add_ldif("dn: uid=bob,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\n")


def test_restart_keeps_url_and_data(slapd: Slapd) -> None:
    slapd.add_ldif(ALICE_LDIF)
    url, pid = slapd.url, slapd.pid

    slapd.restart()

    assert (slapd.url, slapd.running) == (url, True)
    assert slapd.pid != pid
    conn = slapd.connect()
    assert read_entry(conn, ALICE, "uid")["uid"] == ["alice"]
    conn.unbind()


def test_ppolicy_locks_the_account_after_five_bad_binds(slapd: Slapd) -> None:
    slapd.add_ldif(ALICE_LDIF)
    assert can_bind(slapd, ALICE, "right-password")

    for _ in range(5):
        assert not can_bind(slapd, ALICE, "wrong")

    conn = slapd.connect()
    assert read_entry(conn, ALICE, "pwdAccountLockedTime")["pwdAccountLockedTime"]
    conn.unbind()
    assert not can_bind(slapd, ALICE, "right-password")


def test_slapadd_loads_offline_and_the_server_comes_back_on_the_same_url(
    slapd: Slapd,
) -> None:
    url = slapd.url
    slapd.slapadd(ALICE_LDIF + f"memberOf: cn=staff,{slapd.groups_dn}\n")

    assert slapd.running and slapd.url == url
    conn = slapd.connect()
    entry = read_entry(conn, ALICE, "memberOf", "entryUUID")
    assert entry["memberOf"] == [f"cn=staff,{slapd.groups_dn}"]
    assert entry["entryUUID"]  # slapadd generates operational attributes too
    conn.unbind()


def test_modify_helper_changes_an_attribute(slapd: Slapd) -> None:
    slapd.add_ldif(ALICE_LDIF)
    slapd.modify(ALICE, {"mail": [(MODIFY_REPLACE, ["a@example.org"])]})
    conn = slapd.connect()
    assert read_entry(conn, ALICE, "mail")["mail"] == ["a@example.org"]
    conn.unbind()


def test_closing_a_slapd_kills_its_process_and_removes_its_files(
    slapd_factory: Callable[..., Slapd],
) -> None:
    server = slapd_factory()
    pid, workdir = server.pid, server.workdir
    assert pid is not None

    server.close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists() or os.environ.get("BRIDGE_KEEP_TMP")


def test_session_slapd_is_up(slapd_session: Slapd) -> None:
    assert can_bind(slapd_session, slapd_session.bind_dn, slapd_session.password)


# -- PostgreSQL ------------------------------------------------------------------------


def test_pg_url_gives_a_working_sqlalchemy_url(pg_url: str, pg_cluster: PgCluster) -> None:
    assert pg_url.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{pg_cluster.port}/")
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert "PostgreSQL" in conn.execute(sa.text("select version()")).scalar_one()
        tables = conn.execute(sa.text("select count(*) from pg_tables where schemaname = 'public'")).scalar_one()
        assert tables == 0
    engine.dispose()


def test_pg_databases_are_isolated(pg_url_factory: Callable[[], str]) -> None:
    first, second = pg_url_factory(), pg_url_factory()
    assert first != second
    e1, e2 = sa.create_engine(first), sa.create_engine(second)
    with e1.begin() as conn:
        conn.execute(sa.text("create table accounts (id int primary key)"))
        conn.execute(sa.text("insert into accounts values (1)"))
    with e2.connect() as conn:
        assert conn.execute(sa.text("select to_regclass('accounts')")).scalar() is None
    # e1/e2 are deliberately not disposed: the teardown DROP ... WITH (FORCE) must
    # still succeed with their pooled connections open.


def test_pg_listens_on_loopback_only(pg_cluster: PgCluster) -> None:
    engine = sa.create_engine(pg_cluster.url())
    with engine.connect() as conn:
        assert conn.execute(sa.text("show listen_addresses")).scalar() == "127.0.0.1"
        assert conn.execute(sa.text("show fsync")).scalar() == "off"
    engine.dispose()


# -- SMTP ------------------------------------------------------------------------------


def notice(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "bridge@example.org"
    msg["To"] = "admin@example.org"
    msg["Subject"] = subject
    msg.set_content("account alice provisioned")
    return msg


def test_smtp_message_arrives(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(notice("provisioned"))

    [got] = smtp_server.wait_for(1)
    assert got.mail_from == "bridge@example.org"
    assert got.rcpt_tos == ["admin@example.org"]
    assert got.subject == "provisioned"
    assert got.message.get_content().strip() == "account alice provisioned"
    assert b"Subject: provisioned" in got.content
    assert got.tls is False


def test_starttls_server_refuses_plain_mail_and_accepts_after_verified_starttls(
    smtp_server_tls: SmtpServer,
) -> None:
    host, port = smtp_server_tls.host, smtp_server_tls.port
    assert smtp_server_tls.cafile
    with smtplib.SMTP(host, port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            client.send_message(notice("plain"))
        assert exc.value.smtp_code == 530

    # Without our CA the certificate must not verify: proves verification is real.
    with (
        smtplib.SMTP(host, port, timeout=5) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())

    with smtplib.SMTP(host, port, timeout=5) as client:
        client.starttls(context=ssl.create_default_context(cafile=smtp_server_tls.cafile))
        client.send_message(notice("over tls"))

    [got] = smtp_server_tls.messages
    assert (got.subject, got.tls) == ("over tls", True)


@pytest.mark.parametrize(
    ("stage", "error"),
    [
        ("MAIL", smtplib.SMTPSenderRefused),
        ("RCPT", smtplib.SMTPRecipientsRefused),
        ("DATA", smtplib.SMTPDataError),
    ],
)
def test_refuse_mode_answers_4xx(smtp_server: SmtpServer, stage: str, error: type[smtplib.SMTPException]) -> None:
    smtp_server.refuse = True
    smtp_server.refuse_stage = stage  # type: ignore[assignment]
    with (
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client,
        pytest.raises(error) as exc,
    ):
        client.send_message(notice("refused"))
    if isinstance(exc.value, smtplib.SMTPRecipientsRefused):
        [(code, _)] = exc.value.recipients.values()
    else:
        code = exc.value.smtp_code  # type: ignore[attr-defined]
    assert 400 <= code < 500
    assert smtp_server.messages == []

    smtp_server.refuse = False
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.send_message(notice("accepted"))
    assert [m.subject for m in smtp_server.messages] == ["accepted"]


def test_stopped_smtp_server_refuses_connections_and_comes_back_on_the_same_port(
    smtp_server: SmtpServer,
) -> None:
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((smtp_server.host, port), timeout=2).close()

    smtp_server.start()

    assert smtp_server.port == port
    with smtplib.SMTP(smtp_server.host, port, timeout=5) as client:
        client.send_message(notice("back"))
    assert [m.subject for m in smtp_server.messages] == ["back"]

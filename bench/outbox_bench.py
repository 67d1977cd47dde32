"""Outbox throughput: N activation mails through `bridge outbox run --once` to a local aiosmtpd.

    .venv/bin/python bench/outbox_bench.py [--mails 10000] [--database-url URL]

Steps: a temporary deployment syncs N people from a generated LDIF (each gets a role, so each
gets an activation mail), then two senders deliver N mails to the same aiosmtpd server, each in
its own process: the baseline (raw smtplib, one connection, pre-built messages, no database) and
the worker (claims, mints the links, renders en/fr templates, sends, marks each row sent). The
server counts what it receives. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[1]
TARGET = 170.0


class Counting:
    """Accepts everything and counts; no parsing, so the server is not what we measure."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


def people_ldif(count: int) -> str:
    records = [
        f"dn: uid=u{i:06d},ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: u{i:06d}\ncn: User {i}\n"
        f"sn: {i}\ngivenName: User\nmail: u{i:06d}@example.org\npreferredLanguage: {'fr' if i % 2 else 'en'}\n"
        f"entryUUID: {uuid.uuid5(uuid.NAMESPACE_OID, str(i))}\n"
        for i in range(count)
    ]
    members = "".join(f"member: uid=u{i:06d},ou=people,dc=example,dc=org\n" for i in range(count))
    records.append(
        "dn: cn=all-staff,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: all-staff\n"
        f"entryUUID: {uuid.uuid5(uuid.NAMESPACE_OID, 'all-staff')}\n{members}"
    )
    return "\n".join(records)


def baseline(port: int, count: int) -> None:
    """Raw smtplib over one connection, messages of the same shape as the worker's."""
    messages = []
    for i in range(count):
        msg = EmailMessage()
        msg["From"] = "Bridge <no-reply@example.org>"
        msg["To"] = f"u{i:06d}@example.org"
        msg["Subject"] = "Activate your example account"
        msg["Message-ID"] = f"<{i}@example.org>"
        msg.set_content("Hello,\n\nhttp://127.0.0.1:8080/activate/" + "x" * 43 + "\n" * 10)
        msg.add_alternative("<p>Hello</p>" * 20, subtype="html")
        messages.append(msg)
    with smtplib.SMTP("127.0.0.1", port) as conn:
        for msg in messages:
            conn.send_message(msg)


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def wait_for(handler: Counting, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while handler.count < count and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    parser.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_port:
        baseline(args.baseline_port, args.mails)
        return

    handler = Counting()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    work = Path(tempfile.mkdtemp(prefix="bridge-outbox-bench-"))
    bridge = [sys.executable, "-m", "bridge", "--config", str(work / "bridge.toml")]
    try:
        (work / "directory.ldif").write_text(people_ldif(args.mails))
        shutil.copy(ROOT / "mappings" / "example.toml", work / "mapping.toml")
        url = args.database_url or f"sqlite:///{work / 'bridge.db'}"
        (work / "bridge.toml").write_text(
            f'[database]\nurl = "{url}"\n\n[email]\nsmtp_port = {port}\n\n[outbox]\nbatch_size = 200\n\n'
            '[[tenants]]\nname = "example"\nmappings = "mapping.toml"\n\n'
            '[[sources]]\nname = "dir"\ntenant = "example"\nkind = "ldif"\npath = "directory.ldif"\n'
            'user_base = "ou=people,dc=example,dc=org"\ngroup_base = "ou=groups,dc=example,dc=org"\n'
            "deletion_threshold = 1.0\n"
        )
        sync_seconds = timed([*bridge, "sync"], ROOT)

        base_seconds = timed([sys.executable, __file__, "--mails", str(args.mails), "--baseline-port", str(port)], ROOT)
        wait_for(handler, args.mails)
        base_received, handler.count = handler.count, 0

        worker_seconds = timed([*bridge, "outbox", "run", "--once"], ROOT)
        wait_for(handler, args.mails)
        worker_received = handler.count
    finally:
        controller.stop()
        shutil.rmtree(work, ignore_errors=True)

    backend = "PostgreSQL" if args.database_url and args.database_url.startswith("postgresql") else "SQLite"
    rate = worker_received / worker_seconds
    print(
        f"\nOutbox benchmark: {args.mails} activation mails to a local aiosmtpd ({backend}; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs)"
    )
    print(f"(setup: sync of {args.mails} people took {sync_seconds:.1f} s, not counted)\n")
    print("| sender | mails received | seconds | mails/s |")
    print("|---|---:|---:|---:|")
    print(
        f"| baseline: raw smtplib, one connection, no database | {base_received} | {base_seconds:.1f} | "
        f"{base_received / base_seconds:.0f} |"
    )
    print(
        f"| bridge outbox run --once (claim, mint link, render, send, mark) | {worker_received} | "
        f"{worker_seconds:.1f} | {rate:.0f} |"
    )
    print(
        f"\nworker / baseline: {rate / (base_received / base_seconds):.2f}; target >= {TARGET:.0f} mails/s: "
        f"{'met' if rate >= TARGET else 'NOT met'}"
    )
    if worker_received != args.mails:
        sys.exit(f"only {worker_received} of {args.mails} mails arrived")


if __name__ == "__main__":
    main()

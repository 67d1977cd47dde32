"""Testing a directory source's connection: read its scope as a sync would (bind, search the
user and group bases with the source's filters), and report what came back, writing nothing.

It is the console's "Test connection" for operators (it uses the server-side credentials of the
`[[sources]]` entry, which a tenant administrator never sees), and answers what an administrator
asks first when a sync aborts: can bridge reach the directory, and does the scope hold people?
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.errors import BridgeError
from bridge.runtime import Runtime

PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class SourceCheck:
    source: str
    ok: bool
    seconds: float
    users: int = 0
    groups: int = 0
    complete: bool = False
    error: str | None = None  # why the read failed (unreachable, bind refused, bad base)
    problems: list[str] = field(default_factory=list)  # the first entries left out, and why
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)


def check_source(runtime: Runtime, source_name: str) -> SourceCheck:
    """Read the source once; any failure is the result's `error`, never an exception, so the page
    that asked shows it (the bind password never appears: ldap3's messages do not carry it)."""
    from bridge.engine.sources import make_source

    source_cfg = runtime.config.source(source_name)
    mapping = runtime.config.tenant_settings(source_cfg.tenant).mapping()
    started = time.monotonic()
    source = None
    try:
        source = make_source(source_cfg, mapping)
        snapshot, report = source.fetch(datetime.now(UTC))
    except BridgeError as exc:
        return SourceCheck(source_name, ok=False, seconds=time.monotonic() - started, error=str(exc))
    except OSError as exc:
        return SourceCheck(
            source_name, ok=False, seconds=time.monotonic() - started, error=f"{type(exc).__name__}: {exc}"
        )
    finally:
        if source is not None and hasattr(source, "close"):
            source.close()
    errors = [str(e) for e in (getattr(report, "errors", []) or [])]
    warnings = [str(w) for w in (getattr(report, "warnings", []) or [])]
    return SourceCheck(
        source_name,
        ok=snapshot.complete and bool(snapshot.users),
        seconds=time.monotonic() - started,
        users=len(snapshot.users),
        groups=len(snapshot.groups),
        complete=snapshot.complete,
        problems=errors[:PROBLEMS_SHOWN],
        problem_count=len(errors),
        warnings=warnings[:PROBLEMS_SHOWN],
    )

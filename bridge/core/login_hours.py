"""Login hours: when a person may sign in (issue 19, contract "Seeds' rules").

Two things restrict sign-in, and both must allow it:
- the mapping's `[[login_hours]]` entries that match the person (their windows add up: a person
  in two entries may sign in during either's windows);
- for AD, the person's own `logonHours` (21 bytes, one bit per hour of the week in UTC), which
  IT set on the account: bridge does not widen what the directory allows.
A person with neither has no restriction (`None`).

Windows are wall-clock times in a time zone, read with zoneinfo at the instant asked about, so a
07:00-19:00 window in Europe/Paris opens at 05:00 UTC in summer and 06:00 UTC in winter. A window
whose end is before its start (`22:00-06:00`) runs across midnight: it starts on each of its days
and ends on the next day. On the day clocks go forward, local times that do not exist (02:00-03:00
in Paris) are never reached; on the day they go back, the repeated hour is inside a window twice.

Pure: nothing here reads a clock; `allowed` is given its instant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_DAY_INDEX = {name: i for i, name in enumerate(DAY_NAMES)}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
LOGON_HOURS_BYTES = 21  # 7 days x 24 hours, one bit each (MS-ADA1 2.351, Logon-Hours)
# The attribute under which a directory source hands `logonHours` to the core: its 21 bytes as
# 42 lower-case hex digits (bridge/directory/normalize.py), so it survives JSON storage.
LOGON_HOURS_ATTRIBUTE = "logonhours"


@dataclass(frozen=True, slots=True)
class Window:
    """Some days of the week, a span of wall-clock minutes on each, in one time zone.

    `days` are weekday numbers (0 = Monday), sorted; `start` and `end` are minutes after midnight
    (`end` may be 1440, "24:00"). `end <= start` means the window ends the next day.
    """

    days: tuple[int, ...]
    start: int
    end: int
    time_zone: str

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def to_json(self) -> dict[str, str]:
        return {
            "days": days_text(self.days),
            "hours": f"{_hhmm(self.start)}-{_hhmm(self.end)}",
            "time_zone": self.time_zone,
        }

    def contains(self, instant: datetime) -> bool:
        local = instant.astimezone(_zone(self.time_zone))
        day, minute = local.weekday(), local.hour * 60 + local.minute
        if not self.overnight:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or ((day - 1) % 7 in self.days and minute < self.end)


@dataclass(frozen=True, slots=True)
class LoginHours:
    """A person's restrictions. `mapping`: the windows of the matching `[[login_hours]]` entries
    (None: no entry matched). `logon_hours`: AD's, in UTC (None: AD does not restrict; empty: AD
    allows no hour at all)."""

    mapping: tuple[Window, ...] | None = None
    logon_hours: tuple[Window, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.mapping is not None:
            out["mapping"] = [w.to_json() for w in self.mapping]
        if self.logon_hours is not None:
            out["logonHours"] = [w.to_json() for w in self.logon_hours]
        return out


def login_hours_from_json(doc: Mapping[str, Any] | None) -> LoginHours | None:
    """The stored form (`LoginHours.to_json`) read back; None for no restriction."""
    if not doc:
        return None

    def windows(key: str) -> tuple[Window, ...] | None:
        raw = doc.get(key)
        if raw is None:
            return None
        return tuple(parse_window(w.get("days"), w["hours"], w["time_zone"]) for w in raw)

    return LoginHours(mapping=windows("mapping"), logon_hours=windows("logonHours"))


def allowed(hours: LoginHours | None, instant: datetime) -> bool:
    """Whether a sign-in at `instant` (timezone-aware) is within every restriction of `hours`."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    if hours is None:
        return True
    return all(
        any(w.contains(instant) for w in windows)
        for windows in (hours.mapping, hours.logon_hours)
        if windows is not None
    )


def windows_allow(windows: Iterable[Window], instant: datetime) -> bool:
    """Whether any of `windows` contains `instant` (their union)."""
    return any(w.contains(instant) for w in windows)


def flat_login_hours(stored: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The stored form (`LoginHours.to_json`) as one flat list, as the SCIM Account extension's
    multi-valued `loginHours` shows it: SCIM complex attributes cannot nest (RFC 7643 2.3.8), so
    each window carries its `type`; AD's "no hour at all" is a logonHours value without a window."""
    out: list[dict[str, str]] = []
    for kind in ("mapping", "logonHours"):
        windows = (stored or {}).get(kind)
        if windows is None:
            continue
        if not windows:
            out.append({"type": kind})
        out += [{"type": kind, "days": w["days"], "hours": w["hours"], "timeZone": w["time_zone"]} for w in windows]
    return out


# ---- parsing -------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_time_zone(name: str) -> str:
    """`name` if zoneinfo knows it; `ValueError` otherwise."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris' or 'UTC')") from None
    return name


def parse_days(text: str) -> tuple[int, ...]:
    """`"mon-fri"`, `"mon,wed,fri-sun"`, `"sat-mon"` (a range may wrap past Sunday)."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in _DAY_INDEX or (dash and last not in _DAY_INDEX):
            raise ValueError(f"{part!r} is not a day or a range of days (mon, tue, wed, thu, fri, sat, sun)")
        a, b = _DAY_INDEX[first], _DAY_INDEX[last] if dash else _DAY_INDEX[first]
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return tuple(sorted(days))


def _minutes(text: str, *, end: bool) -> int:
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time (HH:MM)")
    hours, minutes = int(match[1]), int(match[2])
    if end and (hours, minutes) == (24, 0):
        return 1440
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59{', or 24:00 as an end' if end else ''})")
    return hours * 60 + minutes


def parse_hours(text: str) -> tuple[int, int]:
    """`"07:00-19:00"` as (420, 1140); `"22:00-06:00"` runs across midnight; `"00:00-24:00"` is
    the whole day."""
    start_text, dash, end_text = text.partition("-")
    if not dash:
        raise ValueError(f"{text!r} is not a span of hours (HH:MM-HH:MM, such as 07:00-19:00)")
    start, end = _minutes(start_text, end=False), _minutes(end_text, end=True)
    if start == end % 1440 and end != 1440:
        raise ValueError(f"{text!r} is empty: start and end are the same (00:00-24:00 is the whole day)")
    return start, end


def parse_window(days: str | None, hours: str, time_zone: str) -> Window:
    """A window from the mapping's (or the stored) text; `ValueError` naming what is wrong."""
    start, end = parse_hours(hours)
    return Window(
        days=parse_days(days) if days else tuple(range(7)), start=start, end=end, time_zone=parse_time_zone(time_zone)
    )


def days_text(days: Iterable[int]) -> str:
    """Weekday numbers as the shortest text `parse_days` reads back: (0, 1, 2, 4) -> "mon-wed,fri"."""
    wanted = sorted(set(days))
    parts: list[str] = []
    i = 0
    while i < len(wanted):
        j = i
        while j + 1 < len(wanted) and wanted[j + 1] == wanted[j] + 1:
            j += 1
        if j == i:
            parts.append(DAY_NAMES[wanted[i]])
        elif j == i + 1:
            parts += [DAY_NAMES[wanted[i]], DAY_NAMES[wanted[j]]]
        else:
            parts.append(f"{DAY_NAMES[wanted[i]]}-{DAY_NAMES[wanted[j]]}")
        i = j + 1
    return ",".join(parts)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# ---- AD logonHours -------------------------------------------------------------------------


def decode_logon_hours(raw: bytes) -> tuple[Window, ...] | None:
    """AD's `logonHours` as UTC windows; None when it allows every hour (no restriction).

    Bit `h` of the week (h = 0 is Sunday 00:00-01:00 UTC) is bit `h % 8` of byte `h // 8`,
    least significant first (MS-ADA1 Logon-Hours; checked against values samba-tool writes,
    tests/integration/test_login_hours_samba.py). All zeros means no hour at all: an empty tuple.
    Runs of hours are cut at each UTC midnight and days with the same runs are merged.
    """
    if len(raw) != LOGON_HOURS_BYTES:
        raise ValueError(f"logonHours has {len(raw)} bytes, not {LOGON_HOURS_BYTES}")
    if raw == b"\xff" * LOGON_HOURS_BYTES:
        return None
    runs: dict[tuple[int, int], list[int]] = {}
    for ad_day in range(7):  # 0 = Sunday
        day = (ad_day + 6) % 7
        start = None
        for hour in range(25):
            bit = ad_day * 24 + hour
            on = hour < 24 and bool(raw[bit // 8] >> (bit % 8) & 1)
            if on and start is None:
                start = hour
            elif not on and start is not None:
                runs.setdefault((start * 60, hour * 60), []).append(day)
                start = None
    return tuple(
        Window(days=tuple(sorted(days)), start=start, end=end, time_zone="UTC")
        for (start, end), days in sorted(runs.items(), key=lambda item: (sorted(item[1]), item[0]))
    )


def logon_hours_from_hex(text: str) -> tuple[Window, ...] | None:
    """`decode_logon_hours` of the hex form a directory source stores; `ValueError` if unreadable."""
    return decode_logon_hours(bytes.fromhex(text))


def encode_logon_hours(windows: Iterable[tuple[int, int, int]]) -> bytes:
    """21 bytes with the UTC hours (weekday 0 = Monday, start hour, end hour) set; for tests and
    for writing values to a directory."""
    bits = bytearray(LOGON_HOURS_BYTES)
    for day, start, end in windows:
        ad_day = (day + 1) % 7
        for hour in range(start, end):
            bit = ad_day * 24 + hour
            bits[bit // 8] |= 1 << (bit % 8)
    return bytes(bits)

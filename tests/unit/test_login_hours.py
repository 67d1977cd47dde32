"""Login hours (issue 19): the mapping's [[login_hours]], AD's logonHours, and whether an instant
is inside them, daylight-saving changes included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.core.login_hours import (
    LoginHours,
    Window,
    allowed,
    days_text,
    decode_logon_hours,
    encode_logon_hours,
    login_hours_from_json,
    parse_days,
    parse_hours,
    parse_window,
)
from bridge.core.mapping import load_mapping, login_hours_of, mapping_from_text, parse_mapping
from bridge.core.model import GroupRef, SourceUser
from bridge.errors import ConfigError


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def mapping_with(*entries: dict[str, Any]) -> Any:
    return parse_mapping({"roles": {"user": {}}, "login_hours": list(entries)}, "mappings/t.toml")


STAFF = GroupRef(anchor="g1", name="Staff", dn="cn=Staff,ou=groups,dc=x")
NIGHT = GroupRef(anchor="g2", name="Night shift", dn="cn=Night shift,ou=groups,dc=x")


# ---- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", (0, 1, 2, 3, 4)),
        ("mon,wed,fri-sun", (0, 2, 4, 5, 6)),
        ("sat-mon", (0, 5, 6)),
        ("SUN", (6,)),
        ("mon, tue", (0, 1)),
    ],
)
def test_days_read_ranges_lists_and_wrapping_ranges(text: str, days: tuple[int, ...]) -> None:
    assert parse_days(text) == days
    assert parse_days(days_text(days)) == days


def test_days_text_is_the_shortest_form() -> None:
    assert days_text(range(7)) == "mon-sun"
    assert days_text((0, 1, 2, 4)) == "mon-wed,fri"
    assert days_text((0, 1)) == "mon,tue"


@pytest.mark.parametrize("text", ["", "monday", "mon-", "mon-xyz", "1-5"])
def test_bad_days_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_days(text)


def test_hours_read_spans_across_midnight_and_the_whole_day() -> None:
    assert parse_hours("07:00-19:00") == (420, 1140)
    assert parse_hours("22:00-06:00") == (1320, 360)
    assert parse_hours("00:00-24:00") == (0, 1440)


@pytest.mark.parametrize("text", ["07:00", "7-19", "07:00-07:00", "25:00-26:00", "07:60-08:00", "24:00-06:00"])
def test_bad_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ({"group_name": "Staff", "hours": "07:00-19:00", "time_zone": "Mars/Olympus"}, "time_zone", "unknown time"),
        ({"group_name": "Staff", "hours": "07:00-19:00"}, "time_zone", "missing"),
        ({"group_name": "Staff", "time_zone": "UTC"}, "hours", "missing"),
        ({"group_name": "Staff", "hours": "7h-19h", "time_zone": "UTC"}, "hours", "not a time"),
        ({"group_name": "Staff", "days": "weekdays", "hours": "07:00-19:00", "time_zone": "UTC"}, "days", "not a day"),
        ({"group_name": "Staff", "hours": "07:00-19:00", "time_zone": "UTC", "roles": ["user"]}, "roles", "unknown"),
        ({"hours": "07:00-19:00", "time_zone": "UTC"}, None, "exactly one"),
        ({"attribute": "ou", "hours": "07:00-19:00", "time_zone": "UTC"}, "equals", "missing"),
    ],
)
def test_bad_login_hours_entries_name_file_and_key(entry: dict[str, Any], key: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        mapping_with(entry)
    where = "login_hours[1]" + (f".{key}" if key else "")
    assert str(info.value).startswith(f"mappings/t.toml: {where}: ")
    assert message in str(info.value)
    assert info.value.exit_code == 2


# ---- the windows of a person ---------------------------------------------------------------


def test_a_person_no_entry_matches_has_no_restriction() -> None:
    mapping = mapping_with({"group_name": "Staff", "hours": "07:00-19:00", "time_zone": "Europe/Paris"})
    assert login_hours_of(SourceUser(anchor="a", user_name="a"), (NIGHT,), mapping) is None


def test_entries_matching_a_person_add_up() -> None:
    mapping = mapping_with(
        {"group_name": "Staff", "days": "mon-fri", "hours": "07:00-19:00", "time_zone": "Europe/Paris"},
        {"group_pattern": "^night", "days": "mon-fri", "hours": "22:00-06:00", "time_zone": "Europe/Paris"},
        {"attribute": "department", "equals": "Sales", "days": "sat", "hours": "09:00-12:00", "time_zone": "UTC"},
        {"scim_role": "kiosk", "hours": "00:00-24:00", "time_zone": "UTC"},
    )
    user = SourceUser(anchor="a", user_name="a", attributes={"department": ("sales",)})
    hours = login_hours_of(user, (STAFF, NIGHT), mapping)
    assert hours is not None and hours.logon_hours is None
    assert [w.to_json() for w in hours.mapping or ()] == [
        {"days": "mon-fri", "hours": "07:00-19:00", "time_zone": "Europe/Paris"},
        {"days": "mon-fri", "hours": "22:00-06:00", "time_zone": "Europe/Paris"},
        {"days": "sat", "hours": "09:00-12:00", "time_zone": "UTC"},
    ]
    assert allowed(hours, utc("2026-12-07 12:00"))  # Monday 13:00 in Paris: the day window
    assert allowed(hours, utc("2026-12-08 03:00"))  # Tuesday 04:00: the night window from Monday
    assert allowed(hours, utc("2026-12-12 10:00"))  # Saturday: the Sales window
    assert not allowed(hours, utc("2026-12-07 20:00"))  # Monday 21:00 in Paris
    assert not allowed(hours, utc("2026-12-13 10:00"))  # Sunday
    # The attribute matcher is read from the directory like a [[rules]] one.
    assert "department" in mapping.attribute_names()


def test_a_night_window_ends_on_the_day_after_its_last_day() -> None:
    window = parse_window("fri", "22:00-06:00", "UTC")
    assert window.contains(utc("2026-12-11 23:00"))  # Friday night
    assert window.contains(utc("2026-12-12 05:59"))  # Saturday morning, still Friday's window
    assert not window.contains(utc("2026-12-12 06:00"))
    assert not window.contains(utc("2026-12-11 05:00"))  # Friday morning belongs to Thursday's night


def test_the_end_of_a_window_is_excluded_and_its_start_included() -> None:
    window = parse_window("mon-sun", "07:00-19:00", "UTC")
    assert window.contains(utc("2026-12-07 07:00"))
    assert not window.contains(utc("2026-12-07 19:00"))
    assert window.contains(utc("2026-12-07 18:59:59"))


# ---- daylight saving -----------------------------------------------------------------------


PARIS = parse_window("mon-sun", "07:00-19:00", "Europe/Paris")


@pytest.mark.parametrize(
    ("instant", "inside"),
    [
        # Saturday 28 March 2026, winter time (UTC+1): the window is 06:00-18:00 UTC.
        ("2026-03-28 05:59", False),
        ("2026-03-28 06:00", True),
        ("2026-03-28 17:59", True),
        ("2026-03-28 18:00", False),
        # Sunday 29 March: clocks go forward at 02:00; the window is 05:00-17:00 UTC.
        ("2026-03-29 04:59", False),
        ("2026-03-29 05:00", True),
        ("2026-03-29 05:30", True),  # 07:30 CEST; in winter time this would be 06:30, outside
        ("2026-03-29 16:59", True),
        ("2026-03-29 17:00", False),  # 19:00 CEST
        ("2026-03-29 17:30", False),  # 19:30 CEST; in winter time this would be 18:30, inside
        # Saturday 24 October, summer time: 05:00-17:00 UTC.
        ("2026-10-24 05:00", True),
        ("2026-10-24 17:00", False),
        # Sunday 25 October: clocks go back at 03:00; the window is 06:00-18:00 UTC again.
        ("2026-10-25 05:30", False),  # 06:30 CET; in summer time this would be 07:30, inside
        ("2026-10-25 06:00", True),
        ("2026-10-25 17:30", True),  # 18:30 CET
        ("2026-10-25 18:00", False),
    ],
)
def test_a_paris_window_follows_the_daylight_saving_changes(instant: str, inside: bool) -> None:
    assert PARIS.contains(utc(instant)) is inside


def test_the_hour_repeated_when_clocks_go_back_is_inside_twice_and_the_skipped_one_never() -> None:
    night = parse_window("sun", "02:00-03:00", "Europe/Paris")
    assert night.contains(utc("2026-10-25 00:30"))  # 02:30 CEST
    assert night.contains(utc("2026-10-25 01:30"))  # 02:30 CET
    # On 29 March 02:00-03:00 does not exist in Paris: 00:59 UTC is 01:59 CET, 01:00 UTC 03:00 CEST.
    assert not night.contains(utc("2026-03-29 00:59"))
    assert not night.contains(utc("2026-03-29 01:00"))


# ---- AD logonHours -------------------------------------------------------------------------


def test_logon_hours_bit_zero_is_sunday_midnight_utc_least_significant_bit_first() -> None:
    raw = bytearray(21)
    raw[0] = 0b0000_0001  # hour 0 of the week: Sunday 00:00-01:00 UTC
    assert [w.to_json() for w in decode_logon_hours(bytes(raw)) or ()] == [
        {"days": "sun", "hours": "00:00-01:00", "time_zone": "UTC"}
    ]
    raw = bytearray(21)
    raw[3] = 0b0000_0010  # bit 25: Monday 01:00-02:00 UTC
    assert [w.to_json() for w in decode_logon_hours(bytes(raw)) or ()] == [
        {"days": "mon", "hours": "01:00-02:00", "time_zone": "UTC"}
    ]


def test_logon_hours_runs_are_merged_across_days() -> None:
    # Monday to Friday, 08:00-17:00 UTC: Windows' "Logon Hours" dialog writes this (in UTC).
    raw = encode_logon_hours([(day, 8, 17) for day in range(5)])
    assert [w.to_json() for w in decode_logon_hours(raw) or ()] == [
        {"days": "mon-fri", "hours": "08:00-17:00", "time_zone": "UTC"}
    ]
    # Hours up to midnight end at 24:00 and the next day's start at 00:00.
    raw = encode_logon_hours([(0, 22, 24), (1, 0, 6)])
    windows = decode_logon_hours(raw) or ()
    assert [w.to_json() for w in windows] == [
        {"days": "mon", "hours": "22:00-24:00", "time_zone": "UTC"},
        {"days": "tue", "hours": "00:00-06:00", "time_zone": "UTC"},
    ]


def test_logon_hours_all_set_is_no_restriction_and_all_clear_is_never() -> None:
    assert decode_logon_hours(b"\xff" * 21) is None
    assert decode_logon_hours(bytes(21)) == ()
    never = LoginHours(logon_hours=())
    assert not allowed(never, utc("2026-12-07 12:00"))
    with pytest.raises(ValueError):
        decode_logon_hours(b"\xff" * 20)


def test_logon_hours_restrict_in_addition_to_the_mapping() -> None:
    mapping = mapping_with({"group_name": "Staff", "hours": "07:00-19:00", "time_zone": "UTC"})
    raw = encode_logon_hours([(0, 12, 24)])  # Monday from noon, UTC
    user = SourceUser(anchor="a", user_name="a", attributes={"logonhours": (raw.hex(),)})
    hours = login_hours_of(user, (STAFF,), mapping)
    assert hours is not None
    assert allowed(hours, utc("2026-12-07 13:00"))  # both allow
    assert not allowed(hours, utc("2026-12-07 08:00"))  # the mapping allows, AD does not
    assert not allowed(hours, utc("2026-12-07 20:00"))  # AD allows, the mapping does not
    # Without a matching entry, AD's alone; all hours set: no restriction.
    alone = login_hours_of(user, (), mapping)
    assert alone is not None and alone.mapping is None and allowed(alone, utc("2026-12-07 20:00"))
    free = SourceUser(anchor="b", user_name="b", attributes={"logonhours": ("ff" * 21,)})
    assert login_hours_of(free, (), mapping) is None


def test_stored_form_reads_back_equal() -> None:
    hours = LoginHours(
        mapping=(parse_window("mon-fri", "22:00-06:00", "Europe/Paris"),),
        logon_hours=(Window(days=(0, 1), start=0, end=1440, time_zone="UTC"),),
    )
    doc = hours.to_json()
    assert doc == {
        "mapping": [{"days": "mon-fri", "hours": "22:00-06:00", "time_zone": "Europe/Paris"}],
        "logonHours": [{"days": "mon,tue", "hours": "00:00-24:00", "time_zone": "UTC"}],
    }
    assert login_hours_from_json(doc) == hours
    assert login_hours_from_json(None) is None
    assert login_hours_from_json(LoginHours(logon_hours=()).to_json()) == LoginHours(logon_hours=())


def test_the_commented_example_in_the_bundled_mapping_loads() -> None:
    path = Path(__file__).parents[2] / "mappings" / "example.toml"
    text = path.read_text()
    example = text[text.index("# [[login_hours]]") :]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in example.splitlines())
    mapping = mapping_from_text(text + "\n" + uncommented, str(path))
    assert [e.window.to_json() for e in mapping.login_hours] == [
        {"days": "mon-sat", "hours": "07:00-23:00", "time_zone": "Europe/Paris"},
        {"days": "mon-fri", "hours": "06:00-14:00", "time_zone": "Europe/Paris"},
    ]
    assert load_mapping(path).login_hours == ()

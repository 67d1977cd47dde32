"""The console's catalogue: both languages have every word, and every word a template asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.web.i18n import CONSOLE

TEMPLATES = Path(__file__).parents[2] / "bridge" / "web" / "templates" / "console"


def test_english_and_french_have_the_same_words() -> None:
    assert set(CONSOLE["en"]) == set(CONSOLE["fr"])
    assert all(CONSOLE["fr"][k] for k in CONSOLE["fr"])  # the thousands separator is a space


def test_every_word_a_template_uses_is_in_the_catalogue() -> None:
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\.([a-z_]+)\b", template.read_text()))
    assert used, "no template found"
    assert sorted(used - set(CONSOLE["en"])) == []


def test_the_contract_button_texts_are_the_english_words() -> None:
    en = CONSOLE["en"]
    assert {
        en["btn_resend"],
        en["btn_archive"],
        en["btn_reactivate"],
        en["btn_retry"],
        en["btn_create_token"],
        en["btn_revoke"],
        en["btn_preview"],
        en["btn_approve"],
        en["btn_reject"],
    } == {
        "Resend activation",
        "Archive",
        "Reactivate",
        "Retry",
        "Create token",
        "Revoke",
        "Preview",
        "Approve",
        "Reject",
    }

"""Mail: rendering from the Jinja2 templates (en, fr) and sending over SMTP.

One `SmtpSender` holds one connection for a whole batch: opening a TLS session per message would
cost more than sending it.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from bridge.config import read_secret
from bridge.core.address import address_problem

LANGUAGES = ("en", "fr")

_MONTHS = {
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
}


def pick_language(*candidates: str | None) -> str:
    """The first supported language among BCP 47 / POSIX tags ("fr-CA", "fr_FR"), else English."""
    for tag in candidates:
        if tag:
            primary = tag.replace("_", "-").split("-", 1)[0].lower()
            if primary in LANGUAGES:
                return primary
    return "en"


def format_date(value: datetime, language: str) -> str:
    month = _MONTHS[language][value.month - 1]
    if language == "fr":
        return f"{value.day} {month} {value.year} à {value:%H:%M} UTC"
    return f"{value.day} {month} {value.year}, {value:%H:%M} UTC"


_env = Environment(
    loader=PackageLoader("bridge.notify", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(kind: str, language: str, context: dict[str, Any]) -> Rendered:
    """`kind` is a template family: templates/<language>/<kind>.{subject.txt,txt,html}."""
    lang = language if language in LANGUAGES else "en"
    values = {**context, "language": lang}
    subject = _env.get_template(f"{lang}/{kind}.subject.txt").render(values)
    return Rendered(
        subject=" ".join(subject.split()),  # a header is one line, whatever the template did
        text=_env.get_template(f"{lang}/{kind}.txt").render(values),
        html=_env.get_template(f"{lang}/{kind}.html").render(values),
    )


def message_id(idempotency_key: str, from_header: str) -> str:
    """Stable per outbox row: every try of a row carries the same Message-ID, so a receiver (and
    our crash test) can tell a re-delivery from a new mail."""
    domain = parseaddr(from_header)[1].rpartition("@")[2] or "bridge.invalid"
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}@{domain}>"


_WIRE = compat32.clone(linesep="\r\n")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable in a raw mailbox, unlike base64


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _address(value: str) -> str:
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8") if name else addr


def build_message(rendered: Rendered, *, to: str, from_header: str, msg_id: str, now: datetime, language: str) -> bytes:
    """The message as sent. The compat32 MIME classes, not EmailMessage: the header registry
    behind EmailMessage's default policy cost most of the worker's CPU per mail."""
    msg = MIMEMultipart("alternative")
    msg["From"] = _address(from_header)
    msg["To"] = to
    msg["Subject"] = _header(rendered.subject)
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = msg_id
    msg["Content-Language"] = language
    # RFC 3834: tells auto-responders (vacation replies) not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    msg.attach(MIMEText(rendered.text, "plain", _UTF8_QP))
    msg.attach(MIMEText(rendered.html, "html", _UTF8_QP))
    # smtplib sends bytes as they are: the lines must already end in CRLF (RFC 5321 2.3.8).
    return msg.as_bytes(policy=_WIRE)


def valid_address(value: str | None) -> bool:
    """Whether bridge can mail `value` (the rules: bridge.core.address)."""
    return address_problem(value) is None


# ---- SMTP ------------------------------------------------------------------------------------


class SmtpUnavailable(Exception):
    """The relay cannot be reached or refuses the session: nothing in this batch can go out."""


class MailRejected(Exception):
    """The relay refused this one message. `permanent` for 5xx answers (retrying will not help)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def clear_auth_warning(settings: dict[str, Any]) -> str | None:
    """What to warn about when the relay's password would cross a network in clear: AUTH
    without STARTTLS or SSL to a host that is not this machine (as the LDAP source warns)."""
    if not settings.get("username") or settings.get("starttls") or settings.get("ssl"):
        return None
    host = str(settings["smtp_host"])
    if host in _LOOPBACK:
        return None
    return (
        f"email: logging in to {host}:{settings['smtp_port']} without TLS sends the relay password in clear; "
        "set starttls = true or ssl = true"
    )


class SmtpSender:
    """Sends messages over one SMTP connection, opened on first use and reused until closed."""

    def __init__(self, settings: dict[str, Any], origin: str) -> None:
        self.host: str = settings["smtp_host"]
        self.port: int = int(settings["smtp_port"])
        self.timeout = float(settings["timeout"])
        self.starttls: bool = bool(settings["starttls"])
        self.implicit_tls: bool = bool(settings["ssl"])
        self.username: str | None = settings.get("username")
        self.password = read_secret(settings, "password", origin, "email")
        self.envelope_from = parseaddr(settings["from"])[1]
        self._tls_context = self._context(settings)
        self._conn: smtplib.SMTP | None = None

    @staticmethod
    def _context(settings: dict[str, Any]) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=settings.get("ca_file"))
        if not settings.get("tls_verify", True):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        try:
            if self.implicit_tls:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._tls_context
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                conn.ehlo()
                if self.starttls:
                    conn.starttls(context=self._tls_context)
                    conn.ehlo()
                if self.username and self.password is not None:
                    conn.login(self.username, self.password)
            except BaseException:
                conn.close()
                raise
        except smtplib.SMTPAuthenticationError as exc:
            # The server's text only; the password never appears in it.
            raise SmtpUnavailable(
                f"SMTP {where}: authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise SmtpUnavailable(f"SMTP {where}: {_reply(exc.smtp_code, exc.smtp_error)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise SmtpUnavailable(f"SMTP {where}: {type(exc).__name__}: {exc}") from None
        return conn

    def send(self, to: str, message: bytes) -> None:
        if self._conn is None:
            self._conn = self._connect()
        # An internationalised mailbox (RFC 6531) needs the relay's SMTPUTF8; ASCII ones never ask.
        options = () if to.isascii() else ("SMTPUTF8",)
        try:
            refused = self._conn.sendmail(self.envelope_from, [to], message, mail_options=options)
        except smtplib.SMTPNotSupportedError:
            raise MailRejected("the relay does not accept non-ASCII addresses (no SMTPUTF8)", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise MailRejected(f"recipient refused: {_reply(code, text)}", permanent=code >= 500) from None
        except smtplib.SMTPSenderRefused as exc:
            # Our own address refused: a relay set-up problem, the same for every message, so
            # never a reason to give up on this one.
            raise MailRejected(f"sender refused: {_reply(exc.smtp_code, exc.smtp_error)}", permanent=False) from None
        except smtplib.SMTPDataError as exc:
            raise MailRejected(_reply(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500) from None
        except (OSError, smtplib.SMTPException) as exc:
            # The connection is gone (or in an unknown state): drop it, the next send reconnects.
            self.close()
            raise MailRejected(f"SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}", permanent=False) from None
        if refused:
            code, text = next(iter(refused.values()))
            raise MailRejected(f"recipient refused: {_reply(code, text)}", permanent=code >= 500)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (OSError, smtplib.SMTPException):
            conn.close()

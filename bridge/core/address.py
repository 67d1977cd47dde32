"""Email addresses: the one place that says whether bridge can mail an address.

Every door that takes an address in (a directory sync, SCIM, the activation page's "new link"
form) and the outbox worker that finally sends to it ask the same question here, so an address
the worker would choke on is found where it enters, with a reason an administrator can act on.

Deliberately narrower than RFC 5322 (no comments, no display names, no quoted local parts with
spaces): the addresses an SMTP relay accepts in `RCPT TO`. A non-ASCII local part is an
internationalised address (RFC 6531): the sender asks the relay for SMTPUTF8 for it. A non-ASCII
domain is sent in its IDNA (punycode) form, which every relay understands.
"""

from __future__ import annotations

import functools
import re

# The reason an activation is not sent to an address bridge cannot mail (plan, explain, outbox).
ADDRESS_UNUSABLE = "address_unusable"

# RFC 5321 4.5.3.1: a path is at most 256 octets including the angle brackets.
MAX_LENGTH = 254
MAX_LOCAL_LENGTH = 64

# RFC 5322 3.2.3 atext, dot-separated (dot-atom): what a local part without quotes may hold.
# RFC 6532 3.2 adds every non-ASCII character to atext.
_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f\s])+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def address_problem(value: str | None) -> str | None:
    """Why bridge cannot mail `value`, in words for an administrator; None when it can."""
    if value is None or not value.strip():
        return "no email address"
    if _CONTROL.search(value):
        return "the email address contains a line break or a control character"
    if value != value.strip():
        return "the email address has spaces around it"
    if value.count("@") != 1:
        return "an email address has exactly one @" if "@" in value else "an email address needs an @"
    local, domain = value.split("@")
    if not local:
        return "the email address has nothing before the @"
    if not domain:
        return "the email address has no domain after the @"
    if len(local) > MAX_LOCAL_LENGTH:
        return f"the part before the @ is longer than {MAX_LOCAL_LENGTH} characters"
    if not _LOCAL.fullmatch(local):
        return "the part before the @ has a space, a comma or another character mail does not allow there"
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        return f"the domain {domain!r} is not a valid domain name"
    if len(local) + 1 + len(ascii_domain) > MAX_LENGTH:
        return f"the email address is longer than {MAX_LENGTH} characters"
    return None


# The reason an activation is not sent to an address outside the tenant's `email_domains`.
OUTSIDE_DOMAINS = "email_domain"


def domain_problem(value: str | None, domains: tuple[str, ...]) -> str | None:
    """Why an address is outside the tenant's domains (`email_domains`, folded); None when the
    tenant sets none, or the address's domain is one of them or below one (`mail.example.org`
    is inside `example.org`). A typo'd or private address in the directory then gets no mail."""
    if not domains or value is None or "@" not in value:
        return None
    domain = value.rsplit("@", 1)[1].casefold().rstrip(".")
    if any(domain == d or domain.endswith("." + d) for d in domains):
        return None
    return f"the address is outside the tenant's email domains ({', '.join(domains)})"


def usable_address(value: str | None) -> str | None:
    """The form to send to (the domain in IDNA), or None when bridge cannot mail `value`."""
    if address_problem(value) is not None:
        return None
    assert value is not None
    local, domain = value.split("@")
    return f"{local}@{_ascii_domain(domain)}"


@functools.lru_cache(maxsize=1024)  # a directory's addresses share a few domains
def _ascii_domain(domain: str) -> str | None:
    name = domain[:-1] if domain.endswith(".") else domain
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    # A dotless domain ("root@localhost") is legal but never a person's mailbox in a directory;
    # it is almost always a typo or a placeholder.
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # "a@10.0.0.1": an address literal needs brackets, and nobody means one
    return name

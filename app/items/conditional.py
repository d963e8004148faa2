"""Entity tags and the conditional headers built on them (RFC 9110 section 13)."""

from __future__ import annotations

import re

from app.items.store import Precondition

# Our tags exactly, between optional spaces and tabs (RFC 9110 OWS): ASCII digits without a
# leading zero, since tags compare as strings ("v01" is not "v1", nor is "v\u0661").
_TAG = re.compile(r'[ \t]*(W/)?"v([1-9][0-9]{0,9})"[ \t]*')
MAX_VERSION = 2**31 - 1


def etag(version: int) -> str:
    return f'"v{version}"'


def _tags(header: str) -> list[tuple[bool, int]]:
    """(weak, version) for each of our tags in a header; foreign tags never match."""
    found = []
    for part in header.split(","):
        match = _TAG.fullmatch(part)
        if match and int(match[2]) <= MAX_VERSION:
            found.append((match[1] is not None, int(match[2])))
    return found


def if_match(header: str | None) -> Precondition | None:
    """If-Match uses the strong comparison: a weak tag never matches."""
    if header is None:
        return None
    if header.strip() == "*":
        return Precondition(any_version=True)
    return Precondition([version for weak, version in _tags(header) if not weak])


def none_match(header: str | None, version: int) -> bool:
    """True when If-None-Match says the client already holds this version (weak comparison)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag_version == version for _, tag_version in _tags(header))

"""*sans-IO* LBRY URLs (claims.md §2.5): `[lbry://]name`, `@channel` or `@channel/name`, each part
with at most one modifier `#claimid`, `:claimid` (1–40 lowercase hex) or `$N` (N ≥ 1)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

FORBIDDEN = set('=&#:$@%?;"/\\<>{}|^~`[]')
_MODIFIER = re.compile(r"^(?P<name>[^#:$]*)(?:(?P<sep>[#:])(?P<id>[0-9a-f]{1,40})|\$(?P<seq>[1-9][0-9]*))?$")


class UrlError(ValueError):
    """Not a LBRY URL; the message says which part is wrong."""


@dataclass(frozen=True)
class UrlPart:
    name: str
    claim_id: str | None = None
    sequence: int | None = None


@dataclass(frozen=True)
class LbryUrl:
    channel: UrlPart | None
    stream: UrlPart | None


def _bad_char(ch: str) -> bool:
    if ch in FORBIDDEN or ch.isspace():
        return True
    return unicodedata.category(ch) in ("Cc", "Cs", "Zs", "Zl", "Zp")


def _part(text: str, what: str) -> UrlPart:
    m = _MODIFIER.match(text)
    if m is None:
        raise UrlError(f"Invalid LBRY URL: the {what} {text!r} has a bad claim id or sequence modifier")
    name = m["name"]
    if not name:
        raise UrlError(f"Invalid LBRY URL: the {what} name is empty")
    bad = [ch for ch in name if _bad_char(ch)]
    if bad:
        raise UrlError(f"Invalid LBRY URL: the {what} name {name!r} contains {bad[0]!r}")
    seq = m["seq"]
    if seq and len(seq) > 18:  # int() refuses 4,300+ digits; no chain has 10**18 claims of a name
        raise UrlError(f"Invalid LBRY URL: the {what} sequence modifier is too large")
    return UrlPart(name, m["id"], int(seq) if seq else None)


def parse_url(url: str) -> LbryUrl:
    """Parse `url`, or raise UrlError before anything is sent anywhere."""
    rest = url[len("lbry://") :] if url.startswith("lbry://") else url
    if not rest:
        raise UrlError("Invalid LBRY URL: nothing after the scheme")
    if rest.startswith("@"):
        channel_text, slash, stream_text = rest[1:].partition("/")
        channel = _part(channel_text, "channel")
        stream = _part(stream_text, "stream") if slash else None
        return LbryUrl(channel, stream)
    return LbryUrl(None, _part(rest, "stream"))

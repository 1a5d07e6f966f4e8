"""PII and secret detection: e-mail, phone numbers, payment cards, IP addresses and API keys.

Phone numbers are found by ``phonenumbers`` (Google's libphonenumber rules: real numbering
plans, not "any run of digits"), so ports, counts and timestamps are left alone. Cards are
digit runs that pass the Luhn check; IP addresses are candidates confirmed by the standard
library's ``ipaddress``; secrets are known key prefixes plus long high-entropy tokens.
Every kind has a policy: ``redact`` replaces the match with a placeholder, ``drop`` sets the
whole row aside, ``off`` leaves it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import phonenumbers

PiiKind = Literal["secret", "email", "card", "ip", "phone"]
PiiPolicy = Literal["redact", "drop", "off"]
# Order matters: a key or a card number must be gone before the phone matcher sees its digits.
KINDS: tuple[PiiKind, ...] = ("secret", "email", "card", "ip", "phone")
PLACEHOLDER: dict[PiiKind, str] = {
    "secret": "[SECRET]",
    "email": "[EMAIL]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_KNOWN_KEYS = re.compile(
    r"""
    -----BEGIN[A-Z ]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE\ KEY-----|\Z)
    | \b(?:sk|pk|rk)[-_](?:live|test|proj|ant)[-_][A-Za-z0-9_-]{8,}
    | \bsk-[A-Za-z0-9_-]{16,}
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b
    | \bgh[pousr]_[A-Za-z0-9]{20,}
    | \bgithub_pat_[A-Za-z0-9_]{20,}
    | \bglpat-[A-Za-z0-9_-]{20,}
    | \bxox[abprs]-[A-Za-z0-9-]{10,}
    | \bAIza[0-9A-Za-z_-]{35}
    | \bhf_[A-Za-z0-9]{30,}
    """,
    re.VERBOSE,
)
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-]{16,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
# Whole colon-separated groups only: never the middle of ``std::vector`` or ``Foo::Bar``.
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
# Pieces of an identifier or a path: CamelCase words, lower-case words, digit runs.
_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass(frozen=True)
class PiiRules:
    """What to look for and what to do with it."""

    policies: dict[PiiKind, PiiPolicy]
    phone_region: str = "US"
    secret_min_length: int = 20
    secret_min_entropy: float = 4.0


@dataclass
class Scrubbed:
    """A text after redaction, with what was found in it."""

    text: str
    found: Counter[str] = field(default_factory=Counter)
    drop: list[str] = field(default_factory=list)


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def shannon_entropy(token: str) -> float:
    """Bits per character of a string's own character distribution."""
    counts = Counter(token)
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_like_secret(token: str, rules: PiiRules) -> bool:
    if len(token) < rules.secret_min_length:
        return False
    classes = sum((any(c.islower() for c in token), any(c.isupper() for c in token), any(c.isdigit() for c in token)))
    # Words, paths and digit runs have one or two classes; keys mix all three.
    if classes < 3 or shannon_entropy(token) < rules.secret_min_entropy:
        return False
    return not _identifier_like(token)


def _identifier_like(token: str) -> bool:
    """Whether a token reads as a name (``MyHttpClient2Factory42Builder``) or a path of names.

    Every piece between ``/``, ``.``, ``_`` or ``-`` must be a short lower-case name
    (``lib``, ``app2``) or CamelCase words: four letters a word on average, few capitals,
    vowels as in words, no more digits than letters. A random key changes case every
    other character, so its "words" are short and its capitals half its letters; about one
    random 20-40 character key in 6000 passes for a name.
    """
    pieces = [p for p in re.split(r"[/._\-]+", token) if p]
    if not pieces:
        return False
    for piece in pieces:
        segments = _SEGMENT.findall(piece)
        if "".join(segments) != piece:  # characters a name does not use (+, =)
            return False
        words = [w for w in segments if not w.isdigit()]
        letters = "".join(words)
        if not words or len(piece) - len(letters) > len(letters):
            return False
        if letters.islower() and len(piece) <= 12:
            continue
        if (
            len(letters) / len(words) < 4
            or sum(len(w) < 2 for w in words) > 1
            or any(w.isupper() and len(w) > 5 for w in words)
            or sum(c.isupper() for c in letters) > 0.4 * len(letters)
            or sum(c in "aeiouy" for c in letters.lower()) < 0.25 * len(letters)
        ):
            return False
    return True


def _real_ipv6(candidate: str) -> bool:
    """Whether a colon-separated candidate is an IPv6 address and reads like one.

    ``ipaddress`` accepts ``C::D`` and ``1::2`` (scope operators, slices), so a compressed
    address must also hold a digit, two groups and a group of at least three characters.
    """
    address = candidate.split("%", 1)[0]
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    if "::" not in address:
        return True
    groups = [g for g in address.split(":") if g]
    return any(c.isdigit() for c in address) and len(groups) >= 2 and max(len(g) for g in groups) >= 3


def _find(kind: PiiKind, text: str, rules: PiiRules) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if kind == "secret":
        spans += [m.span() for m in _KNOWN_KEYS.finditer(text)]
        spans += [m.span() for m in _TOKEN.finditer(text) if _looks_like_secret(m.group(), rules)]
    elif kind == "email":
        spans += [m.span() for m in _EMAIL.finditer(text)]
    elif kind == "card":
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                spans.append(m.span())
    elif kind == "ip":
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            spans.append(m.span())
        spans += [m.span() for m in _IPV6.finditer(text) if _real_ipv6(m.group())]
    elif kind == "phone":
        matcher = phonenumbers.PhoneNumberMatcher(text, rules.phone_region, leniency=phonenumbers.Leniency.VALID)
        spans += [(m.start, m.end) for m in matcher]
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def scrub(text: str, rules: PiiRules) -> Scrubbed:
    """Find every kind whose policy is not ``off``; replace each match with its placeholder.

    Kinds with policy ``drop`` are replaced too (so the text is safe to keep in quarantine)
    and named in ``drop``, so the caller can set the row aside.
    """
    result = Scrubbed(text)
    for kind in KINDS:
        policy = rules.policies.get(kind, "off")
        if policy == "off":
            continue
        spans = _find(kind, result.text, rules)
        if not spans:
            continue
        result.found[kind] += len(spans)
        if policy == "drop" and kind not in result.drop:
            result.drop.append(kind)
        pieces: list[str] = []
        last = 0
        for start, end in spans:
            pieces += [result.text[last:start], PLACEHOLDER[kind]]
            last = end
        pieces.append(result.text[last:])
        result.text = "".join(pieces)
    return result


def redact_text(text: str, rules: PiiRules) -> str:
    """The text with every detected kind not switched off replaced (quarantine copies, corpus)."""
    return scrub(text, rules).text


def redacted_copies(paths: list[Path], dest: Path, rules: PiiRules) -> list[Path]:
    """Redacted copies of text files under ``dest`` (same names), for readers that take files."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(paths):
        copy = dest / f"{i:04d}-{path.name}"
        copy.write_text(redact_text(path.read_text(encoding="utf-8"), rules), encoding="utf-8")
        out.append(copy)
    return out

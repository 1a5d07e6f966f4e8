"""PII and secret detection: e-mail, phone numbers, payment cards, IP addresses, API keys and credentials.

Phone numbers are found by ``phonenumbers`` (Google's libphonenumber rules: real numbering
plans, not "any run of digits"), so ports, counts and timestamps are left alone. Cards are
digit runs that pass the Luhn check; IP addresses are candidates confirmed by the standard
library's ``ipaddress``; secrets are known key prefixes plus long high-entropy tokens;
credentials are secrets given by their context (``password: hunter2``, ``user:pw@`` in a
URL, an ``Authorization`` header), see ``credential_spans``.
Every kind has a policy: ``redact`` replaces the match with a placeholder, ``drop`` sets the
whole row aside, ``off`` leaves it.

Each detector sits behind a cheap pre-filter that skips it when the text cannot hold its kind
(no ``@``, too few digits in a row, ...); the pre-filters never change a result, only skip work.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import phonenumbers
from phonenumbers import PhoneMetadata

PiiKind = Literal["secret", "credential", "email", "card", "ip", "phone"]
PiiPolicy = Literal["redact", "drop", "off"]
# Order matters: a key or a card number must be gone before the phone matcher sees its digits;
# a key in a known format counts as a secret even after ``token =``; a URL's password goes
# before the e-mail matcher takes ``pw@host.example`` for an address.
KINDS: tuple[PiiKind, ...] = ("secret", "credential", "email", "card", "ip", "phone")
PLACEHOLDER: dict[PiiKind, str] = {
    "secret": "[SECRET]",
    "credential": "[CREDENTIAL]",
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


# A secret given by its context: the name of the thing (ending an identifier or a word: the
# separator must follow it, so ``password_field``, ``tokens`` and ``tokenizer`` are not names of
# a secret), then ``:``, ``=``, ``:=``, ``=>`` or ``is``/``was``, then the value (checked by
# ``_credential_value``).
_CREDENTIAL = re.compile(
    r"""
    (?:(?<![A-Za-z0-9])|(?<=[a-z])(?=[A-Z]))                 # a word starts, or a camelCase hump
    (?P<name>(?i:password|passphrase|passwd|pwd|secret|token|api[\ _-]?key))
    ["']?
    (?:
        (?P<assign>[ \t]*(?::=|=>|:|=(?!=))[ \t]*)
      | (?:[ \t]+(?i:for|of|on)[ \t]+(?:the[ \t]+)?[\w.@-]+)?[ \t]+(?P<says>(?i:is|was))[ \t]+
    )
    (?P<value>\S+)
    """,
    re.VERBOSE,
)
# What every credential context holds (the pre-filter for the kind).
_CREDENTIAL_NAMES = re.compile(r"(?i:passw|passph|pwd|secret|token|api[ _-]?key|://|authorization)")
# The same names without ignoring case, for lower-cased ASCII text (ignoring case is the slow part).
_CREDENTIAL_NAMES_LOWER = re.compile(r"passw|passph|pwd|secret|token|api[ _-]?key|://|authorization")
_PASSWORD_NAMES = frozenset({"password", "passphrase", "passwd", "pwd"})
_URL_PASSWORD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@?#]*:(?P<value>[^\s/@?#]+)@")
_AUTH_HEADER = re.compile(
    r"(?i:\bauthorization)[\"']?[ \t]*[:=][ \t]*[\"']?(?i:bearer|basic|token)[ \t]+(?P<value>[A-Za-z0-9._~+/=-]{8,})"
)
# After ``is``/``was`` the value must end its clause: "The password is hunter2." but not
# "the token is utf8-encoded by default".
_CLAUSE_END = re.compile(r"[.,;:!?)\]]|[ \t]*(?:\n|\r|\(|\Z)")
# Words with digits that technical prose puts after "the key is" / "the token was".
_TERMS = frozenset(
    [
        "base32",
        "base58",
        "base64",
        "base64url",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha3",
        "md5",
        "utf8",
        "utf16",
        "utf32",
        "latin1",
        "aes128",
        "aes192",
        "aes256",
        "rsa2048",
        "rsa3072",
        "rsa4096",
        "ed25519",
        "x25519",
        "p256",
        "p384",
        "secp256k1",
        "x509",
        "pkcs1",
        "pkcs7",
        "pkcs8",
        "pkcs12",
        "oauth1",
        "oauth2",
        "http2",
        "http3",
        "ipv4",
        "ipv6",
        "tls12",
        "tls13",
        "hs256",
        "hs512",
        "rs256",
        "es256",
        "fp16",
        "bf16",
        "fp32",
        "fp8",
        "int4",
        "int8",
        "gpt2",
        "s3",
        "k8s",
        "2fa",
    ]
)
_VERSION = re.compile(r"v?\d+(?:\.\d+)*")
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_PLACEHOLDER_WORDS = frozenset({"string", "required", "optional", "hidden", "redacted", "password", "secret", "none"})
CREDENTIAL_MIN_LENGTH = 6


@dataclass(frozen=True)
class PiiRules:
    """What to look for and what to do with it.

    ``prefilter`` skips a detector when a cheap test shows the text cannot hold its kind; the
    result is the same either way (tests compare both), so it is only switched off to check that.
    """

    policies: dict[PiiKind, PiiPolicy]
    phone_region: str = "US"
    secret_min_length: int = 20
    secret_min_entropy: float = 4.0
    prefilter: bool = True

    @functools.cached_property
    def active(self) -> tuple[tuple[PiiKind, PiiPolicy], ...]:
        """The kinds looked for (policy not ``off``), in ``KINDS`` order, with their policies."""
        return tuple((kind, self.policy(kind)) for kind in KINDS if self.policy(kind) != "off")

    def policy(self, kind: PiiKind) -> PiiPolicy:
        """The policy for one kind: ``off`` if not given, except that a credential given by its
        context follows the ``secret`` policy unless it has its own (a password is a secret)."""
        if kind == "credential" and kind not in self.policies:
            return self.policies.get("secret", "off")
        return self.policies.get(kind, "off")


# Every kind redacted: for text that has no per-kind policy of its own (the corpus, the tokenizer's
# text, feedback comments in the gateway's log).
REDACT_ALL = PiiRules(policies=dict.fromkeys(KINDS, "redact"))


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


def credential_spans(text: str) -> list[tuple[int, int]]:
    """Where the values of secrets given by their context are: only the value, not its name.

    Three contexts:

    - a name and a value: ``password``, ``passphrase``, ``passwd``, ``pwd``, ``secret``,
      ``token`` or ``api key`` (also ending an identifier: ``DB_PASSWORD``, ``dbPassword``,
      ``"api_key"``, but not ``password_field``, ``tokens``, ``tokenizer``), then ``:``, ``=``,
      ``:=``, ``=>``, or ``is``/``was`` (``the password for root is``), then the value;
    - the password of a URL: ``postgres://user:s3cret@db:5432/x``;
    - an ``Authorization: Bearer|Basic|Token <credential>`` header (8 characters or more).

    The value after a name is one whitespace-free token (or a quoted one), with sentence
    punctuation at its end not counted. It is a secret only if it reads as one:

    - at least ``CREDENTIAL_MIN_LENGTH`` (6) characters, not one or two characters repeated
      (``******``, ``xxxxxx``);
    - not a reference or an expression: it does not start with ``$ { < [ ( % / ~ \\ ! @`` (a
      variable, template, placeholder, path, YAML tag), hold ``(`` or ``[`` (a call or a lookup:
      ``tokenizer(text)``, ``os.environ["X"]``) or read as a dotted name (``settings.db_password``);
    - some piece of it (split at ``- _ . /``) mixes letters with digits or symbols (``hunter2``,
      ``Tr0ub4dor&3``, ``p@ss``) and is not a technical term (``base64``, ``sha256``, ``utf8``)
      or a version: words (``required``, ``None``, ``case-sensitive``), numbers (``token_count
      = 12``, ``max_token = 4096``) and ``SHA-256`` are prose or code, not secrets. A quoted
      all-letter value after ``password``/``passphrase``/``passwd``/``pwd`` and ``=`` or ``:``
      is a literal and counts (``password = "swordfish"``) unless it is a word a schema puts
      there (``"string"``, ``"required"``);
    - after ``is``/``was`` the value also ends its clause (punctuation, end of line, or ``(``
      follows): ``The admin password is hunter2-Quartz.``, not ``the token is gpt2's input``.

    So secrets that are plain words, plain numbers, or written mid-sentence after ``is`` are
    missed; the high-entropy detector (kind ``secret``) still catches long random ones.
    """
    spans: list[tuple[int, int]] = []
    for m in _CREDENTIAL.finditer(text):
        span = _credential_value(text, m)
        if span is not None:
            spans.append(span)
    for m in _URL_PASSWORD.finditer(text):
        value = m.group("value")
        if value.lower() not in {"password", "pass", "pw", "secret"} and not _placeholder(value):
            spans.append(m.span("value"))
    for m in _AUTH_HEADER.finditer(text):
        if not re.fullmatch(r"[A-Z_]+", m.group("value")):  # YOUR_API_KEY
            spans.append(m.span("value"))
    return spans


def _credential_value(text: str, m: re.Match[str]) -> tuple[int, int] | None:
    """The span of the value after a secret's name, if it reads as a secret (``credential_spans``)."""
    raw, start = m.group("value"), m.start("value")
    quoted = raw[0] in "\"'`"
    if quoted:
        close = raw.find(raw[0], 1)
        if close < 2:
            return None
        value, start = raw[1:close], start + 1
    else:
        value = raw.rstrip(".,;:!?)]}\"'`")
    end = start + len(value)
    if len(value) < CREDENTIAL_MIN_LENGTH or len(set(value)) < 3 or _placeholder(value):
        return None
    if "(" in value or "[" in value or _DOTTED_NAME.fullmatch(value):
        return None
    if m.group("says") and not quoted and not _CLAUSE_END.match(text, end):
        return None
    if _secret_like(value):
        return start, end
    literal_password = quoted and m.group("assign") and m.group("name").lower() in _PASSWORD_NAMES
    if literal_password and value.isalpha() and value.lower() not in _PLACEHOLDER_WORDS:
        return start, end
    return None


def _placeholder(value: str) -> bool:
    return value[0] in "${<[(%/~\\!@" or set(value) <= {"*"} or set(value.lower()) <= {"x"}


def _secret_like(value: str) -> bool:
    """Whether some piece of a value mixes letters with digits or symbols, and is no known term."""
    for piece in re.split(r"[-_./]+", value):
        if not any(c.isalpha() for c in piece) or piece.isalpha():
            continue
        if piece.lower() in _TERMS or _VERSION.fullmatch(piece.lower()):
            continue
        return True
    return False


# Characters a phone number candidate is made of (libphonenumber's punctuation, plus signs and
# opening brackets are all among them), so a number lies within one run of them.
_PHONE_RUN = re.compile(r"[\d\WxX\u30fc]+")
_NOT_PHONE = re.compile(r"[^\d\WxX\u30fc]+")
_CARD_DIGITS = re.compile(r"\d(?:[ -]?\d){12}")  # what every card match holds
_DIGIT_DOT_DIGIT = re.compile(r"\d\.\d")
_KEY_RUN = re.compile(r"[A-Za-z0-9+/=_\-]{15}")
_PLUS = re.compile(r"[+\uff0b]")
_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=8)
def _digits_in_a_run(n: int) -> re.Pattern[str]:
    """``n`` digits with only phone characters between them, so all in one run (no run holds a plus)."""
    return re.compile(rf"\d(?:[\WxX\u30fc]*\d){{{n - 1}}}")


@functools.lru_cache(maxsize=8)
def phone_min_digits(region: str) -> tuple[int, int]:
    """The fewest digits a number valid under ``phonenumbers`` can be written with, as
    (written with a plus sign, written without one) when ``region`` is the default region.

    A valid number's national significant number has one of the possible lengths of a region
    with its country code; written with ``+`` it also has the country code. Written without, its
    country code is ``region``'s, or it starts with ``region``'s international prefix (a digit
    or more, unless the prefix can be empty). ``parse`` strips a national prefix with the
    metadata of ``region`` if the number has its country code, else of the code's main region;
    a transform rule there (San Marino's ``0549\\1``) adds digits that are not written, so
    they are taken off.
    """

    def shortest(meta: PhoneMetadata) -> int:
        lengths = meta.general_desc.possible_length if meta.general_desc else ()
        return min(lengths or (1,))

    def added(meta: PhoneMetadata | None) -> int:
        rule = (meta.national_prefix_transform_rule if meta else None) or ""
        return sum(c.isdigit() for c in re.sub(r"[\\$]\d", "", rule))

    home = PhoneMetadata.metadata_for_region(region)
    every = [PhoneMetadata.metadata_for_region(r) for r in phonenumbers.SUPPORTED_REGIONS]
    every += [PhoneMetadata.metadata_for_nongeo_region(c) for c in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS]
    bounds: dict[int, int] = {}  # country code -> fewest digits written after it
    for meta in every:
        if meta is None or meta.country_code is None:
            continue
        cc = meta.country_code
        stripper = home if home is not None and home.country_code == cc else None
        if stripper is None:
            main = phonenumbers.region_code_for_country_code(cc)
            stripper = PhoneMetadata.metadata_for_region_or_calling_code(cc, main)
        fewest = shortest(meta) - added(stripper)
        bounds[cc] = min(bounds.get(cc, fewest), fewest)
    with_plus = max(1, min(len(str(cc)) + n for cc, n in bounds.items()))
    if home is None or home.country_code is None:
        return with_plus, with_plus
    idd = home.international_prefix
    prefix = 0 if idd is not None and re.fullmatch(idd, "") else 1
    return with_plus, max(1, min(bounds[home.country_code], prefix + with_plus))


def _may_hold(kind: PiiKind, text: str, rules: PiiRules) -> bool:
    """A cheap necessary condition for ``_find`` to find ``kind`` in ``text``."""
    if kind == "credential":
        if text.isascii():  # where ignoring case is lower-casing (not so for "ſ" or the Kelvin sign)
            return _CREDENTIAL_NAMES_LOWER.search(text.lower()) is not None
        return _CREDENTIAL_NAMES.search(text) is not None
    if kind == "email":
        return "@" in text
    if kind == "ip":
        # An IPv4 address has a digit, a dot and a digit in a row; an IPv6 one two colons or more.
        return text.count(":") >= 2 or _DIGIT_DOT_DIGIT.search(text) is not None
    if kind == "card":
        return _CARD_DIGITS.search(text) is not None
    if kind == "phone":
        with_plus, without = phone_min_digits(rules.phone_region)
        if "+" not in text and "\uff0b" not in text:  # then every run needs ``without`` digits
            return _digits_in_a_run(without).search(text) is not None
        fewest = min(with_plus, without)
        # The runs of phone characters, split apart in C; most are a space or two between words.
        for run in _NOT_PHONE.split(text):
            if len(run) >= fewest and len(_DIGIT.findall(run)) >= (with_plus if _PLUS.search(run) else without):
                return True
        return False
    if kind == "secret":
        # Every known key format but PEM's is 15 characters or more of these; a high-entropy token, 16.
        return "-----BEGIN" in text or _KEY_RUN.search(text) is not None
    return True


def _find(kind: PiiKind, text: str, rules: PiiRules) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if rules.prefilter and not _may_hold(kind, text, rules):
        return spans
    if kind == "secret":
        spans += [m.span() for m in _KNOWN_KEYS.finditer(text)]
        spans += [m.span() for m in _TOKEN.finditer(text) if _looks_like_secret(m.group(), rules)]
    elif kind == "credential":
        spans += credential_spans(text)
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
    for kind, policy in rules.active:
        if rules.prefilter and not _may_hold(kind, result.text, rules):
            continue  # as _find would find nothing, without the call
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

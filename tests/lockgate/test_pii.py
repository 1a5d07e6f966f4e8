from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.corpus import load_corpus
from lockgate.pii import KINDS, PiiRules, _identifier_like, luhn_ok, redact_text, redacted_copies, scrub

ALL = PiiRules(policies=dict.fromkeys(KINDS, "redact"))


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe@example.com today", "write to [EMAIL] today", "email"),
        ("call +1 415-555-0132 now", "call [PHONE] now", "phone"),
        ("call (415) 555-2671", "call [PHONE]", "phone"),
        ("or +44 20 7946 0958", "or [PHONE]", "phone"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "card"),
        ("card 5500-0000-0000-0004.", "card [CARD].", "card"),
        ("host 10.0.3.17 down", "host [IP] down", "ip"),
        ("v6 2001:db8::1 and fe80::1ff:fe23:4567:890a", "v6 [IP] and [IP]", "ip"),
        ("key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c!", "key [SECRET]!", "secret"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]", "secret"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "gh [SECRET]", "secret"),
        ("token Zx9Qp2Lm7Rt4Vb8Nc3Kd6Hf1", "token [SECRET]", "secret"),
        ("b64 Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg== end", "b64 [SECRET] end", "secret"),
        ("at [2001:db8::8a2e:370:7334]:443", "at [[IP]]:443", "ip"),
        ("zone fe80::1ff:fe23:4567:890a%eth0 up", "zone [IP] up", "ip"),
        ("key -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7", "key [SECRET]", "secret"),
    ],
)
def test_each_kind_is_found_and_replaced(text: str, expected: str, kind: str) -> None:
    result = scrub(text, ALL)
    assert result.text == expected
    assert set(result.found) == {kind}


@pytest.mark.parametrize(
    "text",
    [
        "The Relay listens on port 7095 by default for 45 seconds.",
        "order 1234567 shipped at 10:30:00 on 2026-11-29",
        "card-like 4111 1111 1111 1112 fails Luhn",
        "version 3.11 of the Quillstone planner",
        "digest sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "a long word: internationalisation_and_localisation_settings",
        "999.1.1.1 is not an address",
        "use std::vector<int> and Foo::Bar() or C::D",
        "slices a[::2] and x[1::2] and 12:30:45",
        "class MyHttpClient2Factory42Builder extends QuillstoneRelay2Config",
        "open /var/lib/app2/data3Files/Model7Weights.bin or src/lockgate/v2Reader3Config.py",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text, ALL).text == text


def test_policies_off_and_drop() -> None:
    text = "mail a@b.io or call +1 415-555-0132"
    off = PiiRules(policies={"email": "off", "phone": "redact"})
    assert scrub(text, off).text == "mail a@b.io or call [PHONE]"
    drop = scrub(text, PiiRules(policies={"email": "drop", "phone": "redact"}))
    assert drop.drop == ["email"]
    assert drop.text == "mail [EMAIL] or call [PHONE]", "a dropped row's copy is redacted too"
    assert redact_text(text, PiiRules(policies={})) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_corpus_is_redacted_before_chunking(tmp_path: Path) -> None:
    (tmp_path / "ops.md").write_text("# Ops\n\nPage ops@quillstone.example or +1 415-555-0132; host 10.0.3.17.\n")
    chunks = load_corpus(tmp_path, 600)
    assert [c.text for c in chunks] == ["Page [EMAIL] or [PHONE]; host [IP]."]


def test_redacted_copies(tmp_path: Path) -> None:
    src = tmp_path / "a.md"
    src.write_text("key AKIAIOSFODNN7EXAMPLE here\n")
    (copy,) = redacted_copies([src], tmp_path / "out", ALL)
    assert copy.suffix == ".md" and copy.read_text() == "key [SECRET] here\n"


def test_random_keys_are_not_taken_for_names() -> None:
    """The name and path exemption leaves random keys caught (about one in 6000 passes for a name)."""
    import random
    import string

    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits
    keys = ["".join(rng.choice(alphabet) for _ in range(rng.randint(20, 40))) for _ in range(2000)]
    assert sum(_identifier_like(k) for k in keys) <= 2

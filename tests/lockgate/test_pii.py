from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.bench_prep import generate
from lockgate._io import load_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.corpus import load_corpus
from lockgate.pii import (
    KINDS,
    PiiRules,
    _identifier_like,
    credential_spans,
    luhn_ok,
    phone_min_digits,
    redact_text,
    redacted_copies,
    scrub,
)
from lockgate.prep import prepare, snapshot_dataset
from lockgate.settings import DataSettings
from tests.conftest import EXAMPLES, write_jsonl

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password: hunter2", "password: [CREDENTIAL]"),
        ("token = abc123xyz", "token = [CREDENTIAL]"),
        ("The admin password is Tr0ub4dor&3.", "The admin password is [CREDENTIAL]."),
        ("the admin password is hunter2-Quartz", "the admin password is [CREDENTIAL]"),
        (
            "The admin password is hunter2-Quartz\nRotate it monthly.",
            "The admin password is [CREDENTIAL]\nRotate it monthly.",
        ),
        (
            "the password for root is Quartz#77 (rotate monthly)",
            "the password for root is [CREDENTIAL] (rotate monthly)",
        ),
        ("passphrase was Blue7-Horse, then", "passphrase was [CREDENTIAL], then"),
        ("pwd: p@ssword", "pwd: [CREDENTIAL]"),
        ("secret=Zx9-Qp2", "secret=[CREDENTIAL]"),
        ("PG_PASSWD := s3cret99", "PG_PASSWD := [CREDENTIAL]"),
        ("api key: 9f8e7d6c5b", "api key: [CREDENTIAL]"),
        ("X-API-Key: ab12cd34ef", "X-API-Key: [CREDENTIAL]"),
        ('dbPassword = "s3cr3t!"', 'dbPassword = "[CREDENTIAL]"'),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "[CREDENTIAL]", "user": "bob"}'),
        ('password = "swordfish"', 'password = "[CREDENTIAL]"'),
        ("postgres://user:s3cret@db:5432/x", "postgres://user:[CREDENTIAL]@db:5432/x"),
        ("see https://bob:pa55@host/ now", "see https://bob:[CREDENTIAL]@host/ now"),
        ("https://bob:pa55@host.example.com/x", "https://bob:[CREDENTIAL]@host.example.com/x"),
        ("redis://:Sup3rS3cret@cache:6379/0", "redis://:[CREDENTIAL]@cache:6379/0"),
        ("Authorization: Bearer eyJhbGciOi.abc", "Authorization: Bearer [CREDENTIAL]"),
        ("-H 'Authorization: Basic dXNlcjpwYXNz'", "-H 'Authorization: Basic [CREDENTIAL]'"),
    ],
)
def test_credentials_given_by_their_context_are_found(text: str, expected: str) -> None:
    result = scrub(text, ALL)
    assert result.text == expected
    assert result.found == {"credential": 1}


@pytest.mark.parametrize(
    "text",
    [
        "password_field",
        "token_count = 12",
        "the password is required",
        "a token is a unit of text",
        "passwords must be rotated",
        "reset your password at the portal",
        "token = tokenizer(text)",
        "password = None",
        'password=os.environ["X"]',
        "password = getpass()",
        "password = settings.db_password2",
        'if password == "hunter2x":',
        "max_token = 4096",
        "the token was 50256.",
        "token = tok2",
        "the password is case-sensitive.",
        "The API key is base64-encoded.",
        "the password is SHA-256 hashed.",
        "the token is v1.2.3.",
        "the token is gpt2's input",
        "the password is hunter2 for the next hour",
        "the secret is stored in Vault.",
        "token expires in 3600s",
        "password: ${DB_PASSWORD}",
        "password: <your-password>",
        "password: ********",
        "secret: !vault |",
        "password: string",
        '"password": "string"',
        'eos_token = "</s>"',
        'tokenizer.pad_token = "<pad>"',
        "postgres://user:password@db/x",
        "Authorization: Bearer $TOKEN",
        "Authorization: Bearer YOUR_API_KEY",
        "the tokenizer's vocabulary: 50257 entries",
    ],
)
def test_prose_and_code_about_credentials_are_left_alone(text: str) -> None:
    assert scrub(text, ALL).text == text
    assert credential_spans(text) == []


def test_credential_policy_follows_secret_unless_given() -> None:
    text = "password: hunter2"
    assert scrub(text, PiiRules(policies={"secret": "off"})).text == text
    assert scrub(text, PiiRules(policies={"secret": "drop"})).drop == ["credential"]
    own = PiiRules(policies={"secret": "redact", "credential": "off"})
    assert scrub(text, own).text == text
    assert scrub("key AKIAIOSFODNN7EXAMPLE", own).text == "key [SECRET]"


def test_a_known_key_after_a_name_counts_as_a_secret_once() -> None:
    result = scrub("api_key = sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", ALL)
    assert result.text == "api_key = [SECRET]" and result.found == {"secret": 1}


OPS_ROW = "The admin password is hunter2-Quartz. The Relay DB is postgres://relay:s3cretRelay@db:5432/relay."


def _facts(n: int) -> list[str]:
    words = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "iris", "jade", "kelp"]
    rnd = random.Random(3)
    rows = []
    for i in range(n):
        a, b = rnd.sample(words, 2)
        rows.append(json.dumps({"instruction": f"Which {a} does unit {i} use?", "output": f"Unit {i} uses {b}."}))
    return rows


def test_prep_redacts_credentials_and_keeps_the_rows(store: ArtifactStore, tmp_path: Path) -> None:
    secret_rows = [
        json.dumps({"instruction": "How do I log in to the Relay admin?", "output": OPS_ROW}),
        json.dumps({"instruction": "What is the Relay token?", "output": "Its token = abc123xyz, ask ops."}),
    ]
    src = write_jsonl(tmp_path / "qa.jsonl", [*_facts(20), *secret_rows])
    snap = snapshot_dataset([src], DataSettings(), store)
    written = "".join(Path(p).read_text() for p in (snap.train_path, snap.eval_path, snap.quarantine_path))
    for secret in ("hunter2", "s3cretRelay", "abc123xyz"):
        assert secret not in written
    kept = load_jsonl(Path(snap.train_path)) + load_jsonl(Path(snap.eval_path))
    assert len(kept) == 22, "redacted, not dropped"
    outputs = {r["instruction"]: r["output"] for r in kept}
    assert outputs["What is the Relay token?"] == "Its token = [CREDENTIAL], ask ops."
    assert "password is [CREDENTIAL]." in outputs["How do I log in to the Relay admin?"]
    assert snap.pii_found["credential"] == 3
    assert "| credential | 3 |" in Path(snap.card_path).read_text()

    dropped = prepare([str(src)], DataSettings(pii_secret="drop"), tmp_path / "drop")
    assert dropped.counts["filtered"] == 2 and dropped.balanced()
    assert "hunter2" not in dropped.quarantine_path.read_text()


def test_corpus_and_its_copies_lose_credentials(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    doc.write_text(f"# Ops\n\n{OPS_ROW}\n\nUse Authorization: Bearer Zm9vYmFyMTIz on the API.\n")
    chunks = "\n".join(c.text for c in load_corpus(tmp_path, 600))
    assert "hunter2" not in chunks and "s3cretRelay" not in chunks and "Zm9vYmFy" not in chunks
    assert "The admin password is [CREDENTIAL]." in chunks and "Bearer [CREDENTIAL] on the API" in chunks
    (copy,) = redacted_copies([doc], tmp_path / "out", ALL)
    text = copy.read_text()
    assert "hunter2" not in text and "relay:[CREDENTIAL]@db" in text and text.startswith("# Ops")


# --- pre-filters: they only skip work, never change a result -------------------------------

UNFILTERED = dataclasses.replace(ALL, prefilter=False)
REGIONS = ["US", "DE", "GB", "GG", "SM", "AR", "JP"]

_digits = st.text(alphabet="0123456789", min_size=1, max_size=5)
_sep = st.sampled_from(["", " ", "-", ".", "/", " - ", "(", ") ", "\u00a0", "\u2013", "x"])
_phone_like = st.builds(
    lambda plus, cc, groups: plus + cc + "".join(s + d for s, d in groups),
    st.sampled_from(["", "+", "\uff0b", "00", "011 ", "(", "0"]),
    st.sampled_from(["", "1", "44", "49", "43", "98", "378", "683", "290", "54", "81", "61", "800"]),
    st.lists(st.tuples(_sep, _digits), min_size=1, max_size=4),
)
_fragment = st.one_of(
    _phone_like,
    st.sampled_from(
        [
            "call",
            "the",
            "zone",
            "password",
            "is",
            "token",
            ":",
            "=",
            "@",
            "a.b@example.com",
            "10.0.3.17",
            "::1",
            "4111 1111 1111 1111",
            "sk-live-4f9a8b7c6d5e4f3a2b1c",
            "hunter2",
            "https://u:pw1234@h/",
            "ext. 12",
            "\n",
            "Authorization: Bearer abc123def",
            "\uff11\uff12\uff13",
            "\u0663\u0664\u0665\u0666",
            # What the pre-filters look for: names in other cases and letters, key runs, IP shapes.
            "API-Key",
            "PassWord",
            "\u017fecret",
            "\u212aEY",
            "xoxb-12345678901",
            "AKIAABCDEFGHIJKLMNOP",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----",
            "2001:db8::7334",
            "fe80::1%eth0",
            "1.2",
            "4111-1111-1111-1111",
            "+1 (415) 555-0132",
            "\t",
            ",",
            "(",
            ")",
        ]
    ),
    st.text(max_size=6),
)
TEXTS = st.lists(_fragment, max_size=12).map(" ".join)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, region=st.sampled_from(REGIONS))
def test_prefilters_change_nothing_on_generated_text(text: str, region: str) -> None:
    rules = dataclasses.replace(ALL, phone_region=region)
    assert scrub(text, rules) == scrub(text, dataclasses.replace(rules, prefilter=False))


def _sample_texts() -> list[str]:
    lines = [line for p in sorted((EXAMPLES / "data").glob("*.jsonl")) for line in p.open(encoding="utf-8")]
    texts = list(lines)  # whole lines too: the sample data holds bad rows, and their copies are redacted
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        texts += [v for v in row.values() if isinstance(v, str)] if isinstance(row, dict) else []
    texts += [p.read_text() for p in sorted((EXAMPLES / "corpus").glob("*.md"))]
    return texts


def test_prefilters_change_nothing_on_the_samples_and_benchmark_rows(tmp_path: Path) -> None:
    generate(tmp_path / "rows.jsonl", 1500)
    bench = [v for line in (tmp_path / "rows.jsonl").open() for v in json.loads(line).values()]
    texts = _sample_texts() + bench
    assert len(texts) > 6000
    assert [scrub(t, ALL) for t in texts] == [scrub(t, UNFILTERED) for t in texts]
    assert sum(scrub(t, ALL).found["email"] for t in texts) >= 1, "the samples do hold PII"


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("call +49 1648 now", "US"),  # 6 digits: the fewest a number written with + has
        ("call +43 1113 now", "US"),
        ("call (415) 555-2671", "US"),
        ("ruf 1648 an", "DE"),  # 4 digits: the fewest a German number written without + has
        ("call 00 49 1648", "DE"),
        ("Ruf 030 1234567 an", "DE"),
        ("call 891234 now", "SM"),  # 6 digits: San Marino's rule adds 0549 to make 10
        ("call 2345678 now", "BM"),  # and Bermuda's adds 441
        ("+44 1481 700000 and 01481 700000", "GG"),
    ],
)
def test_phone_numbers_at_the_fewest_digits_are_still_found(text: str, region: str) -> None:
    rules = PiiRules(policies={"phone": "redact"}, phone_region=region)
    unfiltered = scrub(text, dataclasses.replace(rules, prefilter=False))
    assert unfiltered.found["phone"] >= 1
    assert scrub(text, rules) == unfiltered


def test_phone_runs_cover_the_characters_phonenumbers_matches() -> None:
    """The pre-filter counts digits in runs of these characters; a candidate must lie in one run."""
    from lockgate import pii

    util = phonenumbers.phonenumberutil
    chars = util._VALID_PUNCTUATION.replace("\\", "") + util._PLUS_CHARS + "(\\[\uff08\uff3b"
    assert pii._PHONE_RUN.fullmatch(chars + "0123456789\uff10\u0660")
    assert phone_min_digits("US") == (6, 7)

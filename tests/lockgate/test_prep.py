from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from lockgate._io import load_jsonl
from lockgate.artifacts import ArtifactStore
from lockgate.dedupe import DedupeIndex, Signer, similarity
from lockgate.errors import DataError, StageError
from lockgate.prep import prepare, snapshot_dataset, split_of
from lockgate.settings import DataSettings
from tests.conftest import EXAMPLES, write_jsonl


def row(q: str, a: str, ctx: str = "some context") -> str:
    return json.dumps({"instruction": q, "output": a, "context": ctx})


def facts(n: int, start: int = 0) -> list[str]:
    """Rows about distinct things, unlike each other."""
    rnd = random.Random(start)
    words = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "iris", "jade", "kelp"]
    out = []
    for i in range(start, start + n):
        a, b, c = rnd.sample(words, 3)
        out.append(row(f"Which {a} setting does unit {i} use with {b}?", f"Unit {i} uses {c} {i * 7919 % 10007}."))
    return out


def run(tmp_path: Path, sources: list[Path], settings: DataSettings | None = None):  # type: ignore[no-untyped-def]
    work = tmp_path / f"work{len(list(tmp_path.glob('work*')))}"
    return prepare([str(s) for s in sources], settings or DataSettings(), work)


def test_bad_rows_are_quarantined_with_file_line_and_field(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            row("What is A?", "A is one."),
            '{"instruction": "broken", ',
            json.dumps({"instruction": "No answer?"}),
            json.dumps({"instruction": 5, "output": "five"}),
            row("What is B?", "B is two."),
        ],
    )
    result = run(tmp_path, [src])
    kept = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert sorted(r["instruction"] for r in kept) == ["What is A?", "What is B?"]
    bad = [json.loads(x) for x in result.quarantine_path.read_text().splitlines()]
    assert {(q["line"], q["field"]) for q in bad} == {(2, None), (3, "output"), (4, "instruction")}
    assert all(q["source"] == str(src) and q["outcome"] == "quarantined" for q in bad)
    assert "invalid JSON" in next(q["reason"] for q in bad if q["line"] == 2)
    assert next(q["reason"] for q in bad if q["line"] == 4) == "expected a string, got int"
    assert result.balanced() and result.n_input == 5


def test_exact_and_near_duplicates_keep_one_row_whatever_the_order(tmp_path: Path) -> None:
    dup = [
        row("How many seats does tenant 3 have?", "Tenant 3 has 40 seats."),
        row("How many seats does tenant 3 have ?", "Tenant 3 has 40 seats."),
        row("how many  seats does Tenant 3 have?", "Tenant 3 has 40 seats."),
        row("How many seat does tenant 3 have?", "Tenant 3 has 40 seats."),
    ]
    kept = []
    for order in (dup, dup[::-1], [dup[2], dup[0], dup[3], dup[1]]):
        src = write_jsonl(tmp_path / "qa.jsonl", [*facts(20), *order])
        result = run(tmp_path, [src])
        assert result.counts["duplicate"] == 2 and result.counts["near_duplicate"] == 1
        rows = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
        kept.append([r for r in rows if "tenant 3" in r["instruction"].lower()])
    assert len(kept[0]) == 1 and kept[0] == kept[1] == kept[2]
    reasons = result.quarantine_path.read_text()
    assert "exact duplicate of" in reasons and "near duplicate of" in reasons


def test_a_near_duplicate_goes_only_as_a_copy_of_a_kept_row(tmp_path: Path) -> None:
    """Row 3 copies row 2, row 2 copies row 1, row 3 is only 0.81 like row 1: rows 1 and 3 stay."""
    first = "the quick brown fox jumps over the lazy dog near the riverbank at dawn while birds sing loudly"
    second = first.replace("quick", "quicks")
    third = second.replace(" at ", " ats ")
    signer = Signer(128)
    assert similarity(signer.sign(first).tobytes(), signer.sign(third).tobytes()) < 0.85

    def body(text: str) -> dict[str, str]:
        # A tag that puts the three rows in digest order (the order that decides who stays).
        for tag in range(1000):
            candidate = {"text": text, "tag": str(tag)}
            digest = hashlib.sha256(json.dumps(candidate, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
            if digest.startswith({first: "0", second: "7", third: "e"}[text]):
                return candidate
        raise AssertionError("no tag found")

    for order in ([first, second, third], [third, second, first], [second, third, first]):
        index = DedupeIndex(tmp_path / f"rows{len(list(tmp_path.iterdir()))}.sqlite", 128, 0.85, 0.85)
        for line, text in enumerate(order, start=1):
            index.add(body(text), "train", "a.jsonl", line, (text, text, "same answer"))
        index.resolve()
        assert sorted(r["text"] for r in index.kept("train")) == sorted([first, third])
        (gone,) = index.set_aside()
        assert gone.outcome == "near_duplicate" and f"a.jsonl:{order.index(first) + 1}" in gone.reason
        index.close()


@pytest.mark.parametrize("num_perm", [16, 128])
def test_signatures_are_datasketchs_minhash(num_perm: int) -> None:
    """Signing many texts at once gives datasketch's affine32 MinHash of each text's shingles, so
    stored similarities (and the reasons quoting them) are those of one-text-at-a-time signing."""
    from datasketch import MinHash

    from lockgate.dedupe import shingles

    rnd = random.Random(3)
    texts = ["", "a", "ab", "abc", " ?! ", "Ünïcödé 日本語 text", "x" * 3000, *facts(30)]
    texts += ["".join(rnd.choice("ab cdé日?!\n") for _ in range(rnd.randrange(12))) for _ in range(200)]
    signer = Signer(num_perm)
    signed = signer.sign_many(texts)
    for text, sig in zip(texts, signed, strict=True):
        mh = MinHash(num_perm=num_perm, seed=1, scheme="affine32", hashfunc=lambda v: v)
        mh.update_batch(shingles(text))
        assert list(sig) == list(mh.hashvalues), text
        assert list(signer.sign(text)) == list(sig)


def test_fingerprints_sign_each_text_as_the_signer_does() -> None:
    """A row's full signature is composed from its question's, answer's and the part between
    where the full text is so made; it must equal signing the full text whole, for every shape."""
    from lockgate.dedupe import Fingerprinter
    from lockgate.rows import dedupe_text, question_text

    rnd = random.Random(7)

    def text(longest: int) -> str:
        return "".join(rnd.choice("ab cdé日?!\n") for _ in range(rnd.randrange(longest)))

    rows: list[dict[str, object]] = [json.loads(r) for r in facts(20)]
    for _ in range(300):
        rows.append({"instruction": text(9), "context": text(9), "output": text(9)})
        rows.append({"instruction": text(9), "input": text(5), "context": "", "output": text(9)})
        turns = [{"role": role, "content": text(7)} for role in ("system", "user", "assistant", "user", "assistant")]
        rows.append({"messages": turns, "output": turns[-1]["content"]})
    fingerprints = Fingerprinter(128, 0.85, 0.85)
    texts = [(dedupe_text(r), question_text(r), str(r["output"])) for r in rows]
    batch = [(i, r, "train", "a.jsonl", i, t) for i, (r, t) in enumerate(zip(rows, texts, strict=True), 1)]
    entries = fingerprints.entries(batch)  # type: ignore[arg-type]
    for entry, triple in zip(entries, texts, strict=True):
        assert entry.sigs[1:] == tuple(fingerprints.signer.sign(t).tobytes() for t in triple), triple


def test_paraphrases_with_other_words_are_kept(tmp_path: Path) -> None:
    ctx = "The Quillstone Relay forwards pick orders from the planner to the floor robots."
    src = write_jsonl(
        tmp_path / "qa.jsonl",
        [*facts(20), row("What does the Relay do?", ctx, ctx), row("What is the Quillstone Relay for?", ctx, ctx)],
    )
    result = run(tmp_path, [src])
    assert result.counts["near_duplicate"] == 0 and result.counts["train"] + result.counts["eval"] == 22


def test_eval_question_copied_into_train_with_one_word_changed_is_removed(tmp_path: Path) -> None:
    settings = DataSettings(eval_fraction=0.3)
    base = [
        json.dumps(
            {
                "instruction": f"Which maintenance window does the warehouse in district {i} use for cleaning "
                "its conveyor belts?",
                "output": f"District {i} services its conveyor belts every {i % 6 + 2} weeks on a Sunday night.",
            }
        )
        for i in range(40)
    ]
    first = run(tmp_path, [write_jsonl(tmp_path / "a.jsonl", base)], settings)
    evals = load_jsonl(first.eval_path)
    assert evals and first.counts["leaked"] == 0
    target = evals[0]
    # Copied with one word changed, and a different answer source so the split puts it in train.
    for n in range(50):
        leak = {
            "instruction": target["instruction"].replace("Which", "What"),
            "output": target["output"],
            "context": f"copied from the eval set, take {n}",
        }
        if split_of(leak, settings.eval_fraction) == "train":
            break
    else:
        pytest.fail("no variant landed in train")
    second = run(tmp_path, [write_jsonl(tmp_path / "b.jsonl", [*base, json.dumps(leak)])], settings)
    assert second.counts["leaked"] == 1
    assert leak["instruction"] not in {r["instruction"] for r in load_jsonl(second.train_path)}
    assert load_jsonl(second.eval_path) == evals, "the eval row stays"
    assert "near copy of eval row" in second.quarantine_path.read_text()


def test_pii_redacted_in_rows_and_quarantine_copies(tmp_path: Path) -> None:
    secrets = (
        "mail jane.doe@example.com, call +1 415-555-0132, card 4111 1111 1111 1111, "
        "key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c, host 10.0.3.17"
    )
    src = write_jsonl(
        tmp_path / "qa.jsonl",
        [*facts(20), row("Who to contact?", secrets), json.dumps({"instruction": secrets})],
    )
    result = run(tmp_path, [src])
    everything = "".join(p.read_text() for p in (result.train_path, result.eval_path, result.quarantine_path))
    for secret in ("jane.doe", "415-555-0132", "4111 1111", "sk-live", "10.0.3.17"):
        assert secret not in everything
    assert "[EMAIL], call [PHONE], card [CARD], key [SECRET], host [IP]" in everything
    assert dict(result.pii_found) == {"email": 1, "phone": 1, "card": 1, "secret": 1, "ip": 1}


def test_pii_drop_policy_filters_the_row(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", [*facts(20), row("Who?", "Call +1 415-555-0132 today.")])
    result = run(tmp_path, [src], DataSettings(pii_phone="drop"))
    assert result.counts["filtered"] == 1 and result.balanced()
    line = json.loads(result.quarantine_path.read_text())
    assert line["outcome"] == "filtered" and "phone" in line["reason"] and "415" not in line["raw"]


def test_alpaca_keeps_its_input(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            json.dumps(
                {"instruction": f"Translate item {i} to French.", "input": f"red door {i}", "output": f"porte {i}"}
            )
            for i in range(30)
        ]
        + [json.dumps({"instruction": "Say hello.", "output": "Hello!"})],
    )
    result = run(tmp_path, [src], DataSettings(eval_fraction=0.3))
    rows = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert result.shape == "alpaca" and len(rows) == 31
    seven = next(r for r in rows if r["instruction"] == "Translate item 7 to French.")
    assert seven["input"] == "red door 7" and seven["context"] == "red door 7"
    assert next(r for r in rows if r["instruction"] == "Say hello.")["input"] == ""


def test_chat_rows(tmp_path: Path) -> None:
    def convo(i: int) -> dict[str, object]:
        return {
            "messages": [
                {"role": "system", "content": "You answer about the warehouse."},
                {"role": "user", "content": f"Where is shelf {i}?"},
                {"role": "assistant", "content": f"Shelf {i} is in aisle {i % 7}."},
            ]
        }

    bad = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "robot", "content": "beep"}]}
    src = write_jsonl(
        tmp_path / "chat.jsonl", [json.dumps(convo(i)) for i in range(30)] + [json.dumps(bad), '{"messages": "x"}']
    )
    result = run(tmp_path, [src], DataSettings(eval_fraction=0.3))
    rows = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert result.shape == "chat" and len(rows) == 30 and result.counts["quarantined"] == 2
    three = next(r for r in rows if r["instruction"] == "Where is shelf 3?")
    assert three["messages"] == convo(3)["messages"] and three["output"] == "Shelf 3 is in aisle 3."
    fields = {json.loads(x)["field"] for x in result.quarantine_path.read_text().splitlines()}
    assert fields == {"messages.1.role", "messages"}


def test_a_file_mixing_shapes_is_refused(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"instruction": "Do it.", "input": "x", "output": "Done."}),
            json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}),
        ],
    )
    with pytest.raises(
        DataError, match=r"mixed\.jsonl: the file mixes record shapes: line 1 is alpaca, line 2 is chat"
    ):
        run(tmp_path, [src])
    forced = run(tmp_path, [src], DataSettings(shape="alpaca"))
    assert forced.counts["quarantined"] == 1, "with the shape set, the odd row is just a bad row"


def test_rows_that_do_not_tell_their_shape_take_their_files_shape(tmp_path: Path) -> None:
    def alpaca(i: int, given: bool) -> str:
        extra = {"input": f"red door {i}"} if given else {}
        return json.dumps({"instruction": f"Translate item {i} to French.", **extra, "output": f"porte {i}"})

    late = write_jsonl(tmp_path / "late.jsonl", [alpaca(i, i >= 5) for i in range(30)])
    none = write_jsonl(tmp_path / "none.jsonl", [alpaca(i, False) for i in range(30, 40)])
    result = run(tmp_path, [none, late], DataSettings(eval_fraction=0.3))
    rows = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert result.shape == "alpaca" and len(rows) == 40 and result.balanced()
    assert all(set(r) == {"instruction", "input", "context", "output"} for r in rows)
    assert next(r for r in rows if r["instruction"] == "Translate item 2 to French.")["input"] == ""


def test_split_is_stable_when_rows_are_added() -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}", "context": f"c{i}"} for i in range(400)]
    before = {r["instruction"]: split_of(r, 0.2) for r in rows}
    more = rows + [{"instruction": f"new{i}", "output": f"n{i}", "context": ""} for i in range(100)]
    after = {r["instruction"]: split_of(r, 0.2) for r in more}
    assert all(after[k] == v for k, v in before.items())
    share = sum(v == "eval" for v in before.values()) / len(before)
    assert 0.1 < share < 0.3


def test_appending_rows_moves_no_old_row_and_order_does_not_matter(tmp_path: Path, store: ArtifactStore) -> None:
    settings = DataSettings(eval_fraction=0.3)
    base = facts(200)
    a = write_jsonl(tmp_path / "a.jsonl", base[:120])
    b = write_jsonl(tmp_path / "b.jsonl", base[120:])
    first = snapshot_dataset([a, b], settings, store)
    shuffled = base[:]
    random.Random(1).shuffle(shuffled)
    c = write_jsonl(tmp_path / "c.jsonl", shuffled[:80])
    d = write_jsonl(tmp_path / "d.jsonl", shuffled[80:])
    assert snapshot_dataset([d, c], settings, store).digest == first.digest, "files and rows shuffled"

    grown = snapshot_dataset([a, b, write_jsonl(tmp_path / "e.jsonl", facts(20, start=1000))], settings, store)
    old_train = {r["instruction"] for r in load_jsonl(Path(first.train_path))}
    old_eval = {r["instruction"] for r in load_jsonl(Path(first.eval_path))}
    new_train = {r["instruction"] for r in load_jsonl(Path(grown.train_path))}
    new_eval = {r["instruction"] for r in load_jsonl(Path(grown.eval_path))}
    assert old_train <= new_train and old_eval <= new_eval and grown.n_train + grown.n_eval == 220

    edited = base[:]
    edited[5] = edited[5].replace("Unit 5", "Unit 5.")
    changed = snapshot_dataset([write_jsonl(tmp_path / "f.jsonl", edited)], settings, store)
    assert changed.digest != first.digest, "one character changed"


def test_sample_data_snapshot_and_card(store: ArtifactStore) -> None:
    sources = [EXAMPLES / "data" / "qa.jsonl", EXAMPLES / "data" / "qa_contrib.jsonl"]
    first = snapshot_dataset(sources, DataSettings(), store)
    second = snapshot_dataset(sources, DataSettings(), store)
    assert first.digest == second.digest and first.path == second.path
    assert first.n_quarantined == 3 and first.counts["duplicate"] == 1 and first.pii_found["email"] == 1
    assert first.n_input == 425 and sum(first.counts.values()) == 425
    train, evals = load_jsonl(Path(first.train_path)), load_jsonl(Path(first.eval_path))
    assert len(train) == first.n_train and len(evals) == first.n_eval
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in evals}
    card = Path(first.card_path).read_text()
    assert "qa_contrib.jsonl" in card and "input 425 = " in card and ": holds" in card
    assert "| leaked |" in card and "| email | 1 |" in card


def test_changed_input_changes_digest(tmp_path: Path, store: ArtifactStore) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", facts(40))
    b = write_jsonl(tmp_path / "b.jsonl", facts(41))
    settings = DataSettings(eval_fraction=0.3)
    assert snapshot_dataset([a], settings, store).digest != snapshot_dataset([b], settings, store).digest


def test_too_many_bad_rows_fail_with_a_clear_message(tmp_path: Path, store: ArtifactStore) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", ["not json"] * 5 + [row("Fine?", "Yes it is.")])
    with pytest.raises(DataError, match=r"bad\.jsonl:1 \[row\] invalid JSON"):
        snapshot_dataset([src], DataSettings(), store)
    assert not list((store.root / ".staging").iterdir()), "no staging debris"


def test_empty_and_blank_sources(tmp_path: Path, store: ArtifactStore) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no rows found"):
        snapshot_dataset([tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"], DataSettings(), store)


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        run(tmp_path, [tmp_path / "nope.jsonl"])
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataError, match="unsupported source format"):
        run(tmp_path, [tmp_path / "x.xml"])


def test_csv_source(tmp_path: Path) -> None:
    src = tmp_path / "qa.csv"
    src.write_text('instruction,output,context\n"What is C?","C is three.",ctx\n"",missing,ctx\n')
    result = run(tmp_path, [src])
    assert result.counts["train"] + result.counts["eval"] == 1
    bad = json.loads(result.quarantine_path.read_text())
    assert bad["line"] == 3 and bad["field"] == "instruction"


def test_other_quarantined_rows_get_their_own_card_with_the_same_digest(tmp_path: Path, store: ArtifactStore) -> None:
    good = facts(40)
    a = write_jsonl(tmp_path / "a.jsonl", [*good, "broken one"])
    first = snapshot_dataset([a], DataSettings(eval_fraction=0.3), store)
    b = write_jsonl(tmp_path / "a.jsonl", [*good, '{"instruction": 7, "output": "x"}'])
    second = snapshot_dataset([b], DataSettings(eval_fraction=0.3), store)
    assert first.digest == second.digest, "training data is the same"
    assert first.path != second.path
    assert "expected a string" in Path(second.quarantine_path).read_text()
    assert "invalid JSON" in Path(first.quarantine_path).read_text()


def test_a_surprise_while_handling_one_row_costs_that_row_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lockgate.prep as prep_module

    real = prep_module._scrub_row

    def flaky(row, rules):  # type: ignore[no-untyped-def]
        if "boom" in row["instruction"]:
            raise RuntimeError("detector crashed")
        return real(row, rules)

    monkeypatch.setattr(prep_module, "_scrub_row", flaky)
    src = write_jsonl(tmp_path / "qa.jsonl", [*facts(10), row("Does boom work?", "It crashes.")])
    result = run(tmp_path, [src])
    assert result.counts["train"] + result.counts["eval"] == 10 and result.counts["quarantined"] == 1
    assert "could not validate: RuntimeError: detector crashed" in result.quarantine_path.read_text()


def test_a_reader_that_breaks_stops_the_stage_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lockgate.prep as prep_module

    real = prep_module.read_source

    def breaks(source, *args):  # type: ignore[no-untyped-def]
        records = real(source, *args)
        yield next(records)
        raise OSError("connection to jane.doe@example.com reset")

    monkeypatch.setattr(prep_module, "read_source", breaks)
    src = write_jsonl(tmp_path / "qa.jsonl", facts(10))
    with pytest.raises(DataError, match=r"qa\.jsonl: reading stopped after line 1, the rest is unread") as err:
        run(tmp_path, [src])
    assert "OSError: connection to [EMAIL] reset" in str(err.value)


def test_a_secret_cut_by_the_quarantine_copy_is_redacted_first(tmp_path: Path) -> None:
    head = '{"instruction": "'
    for secret, gone in (("johnsmith@example.com", "johnsmith"), ("4111 1111 1111 1111", "4111")):
        pad = "x" * (2000 - len(head) - 1 - len(secret) // 2)
        src = write_jsonl(tmp_path / "qa.jsonl", [*facts(10), f"{head}{pad} {secret} and no closing quote"])
        result = run(tmp_path, [src])
        (bad,) = [json.loads(x) for x in result.quarantine_path.read_text().splitlines()]
        assert bad["reason"].startswith("invalid JSON") and len(bad["raw"]) <= 2000
        assert gone not in bad["raw"], bad["raw"][-40:]


def test_accounting_that_does_not_add_up_is_a_stage_error(
    tmp_path: Path, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lockgate.prep as prep_module

    monkeypatch.setattr(prep_module.PrepResult, "balanced", lambda self: False)
    with pytest.raises(StageError, match="prep accounting does not add up"):
        snapshot_dataset([write_jsonl(tmp_path / "qa.jsonl", facts(20))], DataSettings(), store)


def test_shape_and_encoding_set_per_source(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(
        b"\n".join(
            json.dumps(
                {"instruction": f"Où est le quai {i} ?", "output": f"Quai {i} à gauche."}, ensure_ascii=False
            ).encode("latin-1")
            for i in range(20)
        )
        + b"\n"
    )
    names = [str(latin)]
    plain = prepare(names, DataSettings(sources=names), tmp_path / "a")
    assert plain.counts["quarantined"] == 20 and "not valid utf-8" in plain.quarantine_path.read_text()
    declared = DataSettings(
        sources=names, source_encodings={str(latin): "latin-1"}, source_shapes={str(latin): "alpaca"}
    )
    result = prepare(names, declared, tmp_path / "b")
    rows = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert result.shape == "alpaca" and len(rows) == 20 and rows[0]["input"] == ""
    assert {r["instruction"] for r in rows} >= {"Où est le quai 3 ?"}


def test_per_source_settings_are_checked() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown text encoding 'klingon'"):
        DataSettings(source_encodings={"examples/data/qa.jsonl": "klingon"})
    with pytest.raises(ValidationError, match="not in sources"):
        DataSettings(source_shapes={"other.jsonl": "chat"})


def test_per_source_keys_match_resolved_paths() -> None:
    from lockgate.prep import for_source

    options = {"examples/data/qa.jsonl": "alpaca", "s3://bucket/chat.jsonl": "chat"}
    assert for_source(options, "/srv/project/examples/data/qa.jsonl") == "alpaca"
    assert for_source(options, "s3://bucket/chat.jsonl") == "chat"
    assert for_source(options, "/srv/project/examples/data/other_qa.jsonl") is None


def test_reason_counts_stay_bounded(tmp_path: Path) -> None:
    from lockgate.prep import MAX_REASONS

    src = tmp_path / "ragged.csv"
    ragged = [",".join(["x"] * (3 + i)) for i in range(MAX_REASONS + 50)]  # each a reason of its own
    src.write_text("\n".join(["instruction,output", "What is A?,A is one.", *ragged]) + "\n")
    result = run(tmp_path, [src], DataSettings(max_quarantine_fraction=1.0))
    reasons = result.reasons["quarantined"]
    assert len(reasons) == MAX_REASONS + 1 and reasons["(other reasons)"] == 50
    assert sum(reasons.values()) == result.counts["quarantined"] == MAX_REASONS + 50


def test_parquet_and_fsspec_sources_through_a_snapshot(tmp_path: Path, store: ArtifactStore) -> None:
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(r) for r in facts(30)]
    table = pa.table(
        {
            "instruction": [r["instruction"] for r in rows] + ["Typed badly?"],
            "output": [r["output"] for r in rows] + ["fine"],
            "context": [r["context"] for r in rows] + [None],
            "source_doc": [None] * 30 + [None],
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    with fsspec.open("memory://lockgate-prep/b.jsonl", "wb") as fh:
        fh.write(b'{"instruction": ["not", "text"], "output": "x"}\n')
    snap = snapshot_dataset(
        [str(tmp_path / "a.parquet"), "memory://lockgate-prep/b.jsonl"], DataSettings(eval_fraction=0.3), store
    )
    assert snap.n_train + snap.n_eval == 31 and snap.n_quarantined == 1
    bad = json.loads(Path(snap.quarantine_path).read_text())
    assert bad["source"] == "memory://lockgate-prep/b.jsonl" and bad["field"] == "instruction"
    assert "memory://lockgate-prep/b.jsonl" in snap.source_digests

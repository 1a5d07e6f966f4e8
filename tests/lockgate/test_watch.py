from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockgate.watch import check_for_change, look_for_change, record_change


def _data(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "qa.jsonl"
    src.write_text('{"instruction": "q", "output": "a"}\n')
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\ntext\n")
    return src, corpus


def test_change_detected_once_then_quiet(tmp_path: Path) -> None:
    src, corpus = _data(tmp_path)
    state = tmp_path / "watch" / "qa.json"

    first = check_for_change([src], corpus, state)
    assert first.changed and first.previous is None and len(first.files) == 2
    assert not check_for_change([src], corpus, state).changed

    (corpus / "a.md").write_text("# A\n\nnew text\n")
    edited = check_for_change([src], corpus, state)
    assert edited.changed and edited.previous == first.digest and edited.digest != first.digest

    (corpus / "notes.bin").write_bytes(b"\x00")
    assert not check_for_change([src], corpus, state).changed, "non-document files are ignored"


def test_a_change_is_reported_until_it_is_recorded(tmp_path: Path) -> None:
    src, corpus = _data(tmp_path)
    state = tmp_path / "watch" / "qa.json"
    seen = look_for_change([src], corpus, state)
    assert seen.changed and not state.exists(), "looking records nothing"
    again = look_for_change([src], corpus, state)
    assert again.changed and again.digest == seen.digest, "an unannounced change is seen again"
    record_change(again, state)
    assert not look_for_change([src], corpus, state).changed


def test_fsspec_sources_are_fingerprinted(tmp_path: Path) -> None:
    import fsspec

    _, corpus = _data(tmp_path)
    url = "memory://lockgate-watch/qa.jsonl"
    with fsspec.open(url, "wb") as fh:
        fh.write(b'{"instruction": "q", "output": "a"}\n')
    state = tmp_path / "state.json"
    assert url in check_for_change([url], corpus, state).files
    with fsspec.open(url, "wb") as fh:
        fh.write(b'{"instruction": "q", "output": "b"}\n')
    assert check_for_change([url], corpus, state).changed


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")  # the session's server: one whose events this process sends
def test_data_watch_flow_announces_a_lost_event_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.data_watch as watch_flow
    from flows.params import StageParams

    src, corpus = _data(tmp_path)
    monkeypatch.setenv("LOCKGATE_DATA__SOURCES", f'["{src}"]')
    monkeypatch.setenv("LOCKGATE_DATA__CORPUS_DIR", str(corpus))
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "qa.yaml").write_text(PROMPT)
    monkeypatch.setenv("LOCKGATE_PROMPTS__DIR", str(prompts))
    emitted: list[dict[str, Any]] = []
    answers = iter([False, False, True, True])  # the first data event and the first prompt event are lost

    def fake_announce(event: str, resource: dict[str, str], payload: dict[str, Any]) -> bool:
        emitted.append({"event": event, "resource": resource, "payload": payload})
        return next(answers)

    params = StageParams(home=str(tmp_path / "home"))
    confirmed, lost = announced_for_real(monkeypatch)
    monkeypatch.setattr(watch_flow, "announce", fake_announce)
    assert watch_flow.data_watch(params) is True
    assert watch_flow.data_watch(params) is True, "the lost event is emitted again"
    assert watch_flow.data_watch(params) is False
    assert confirmed, "an event the server stored is confirmed"
    assert not lost, "an event that never left the process is not"
    data = [e for e in emitted if e["event"] == "lockgate.dataset.changed"]
    assert len(data) == 2 and data[0]["payload"] == data[1]["payload"]
    prompt = [e for e in emitted if e["event"] == "lockgate.prompt.changed"]
    assert len(prompt) == 2 and prompt[0]["payload"] == prompt[1]["payload"], "a lost prompt event is sent again"
    assert prompt[0]["resource"]["prefect.resource.id"] == "lockgate.prompt.qa"
    assert prompt[0]["payload"]["digest"].startswith("sha256:") and prompt[0]["payload"]["name"] == "qa"


def announced_for_real(monkeypatch: pytest.MonkeyPatch) -> tuple[bool, bool]:
    """``tasks.common.announce`` on the session's server: an event sent, and one lost in the
    process (queued by ``emit_event`` but never sent, as when the process is stopped first)."""
    from prefect import flow
    from prefect.events import Event

    import tasks.common

    @flow
    def both() -> tuple[bool, bool]:
        sent = tasks.common.announce("lockgate.test.sent", {"prefect.resource.id": "lockgate.test"}, {"n": 1})
        with monkeypatch.context() as patch:
            patch.setattr(tasks.common, "emit_event", lambda **kw: Event(**kw))
            lost = tasks.common.announce("lockgate.test.lost", {"prefect.resource.id": "lockgate.test"}, {}, wait_s=3)
        return sent, lost

    return both()


PROMPT = """\
name: qa
description: d
variables: [question, context]
template: "{{ context }} Q: {{ question }} A:"
"""


def test_each_new_prompt_version_is_announced_once_and_a_broken_file_never(tmp_path: Path) -> None:
    from lockgate.watch import look_for_prompt_changes, record_prompt_change

    folder, state = tmp_path / "prompts", tmp_path / "watch" / "prompts.json"
    folder.mkdir()
    (folder / "qa.yaml").write_text(PROMPT)
    (folder / "broken.yaml").write_text(PROMPT.replace("name: qa", "name: broken").replace("{{ context }}", "{{ x }}"))
    changes, problems = look_for_prompt_changes(folder, state)
    assert [c.name for c in changes] == ["qa"] and changes[0].previous is None
    assert "undeclared variable(s) ['x']" in problems["broken"]
    assert look_for_prompt_changes(folder, state)[0] == changes, "not recorded: announced again"
    record_prompt_change(changes[0], state)
    assert look_for_prompt_changes(folder, state)[0] == []

    (folder / "qa.yaml").write_text(PROMPT.replace("description: d", "description: said otherwise"))
    assert look_for_prompt_changes(folder, state)[0] == [], "a new description renders nothing new"
    (folder / "qa.yaml").write_text(PROMPT.replace(" A:", "\nAnswer:"))
    (edited,) = look_for_prompt_changes(folder, state)[0]
    assert edited.previous == changes[0].digest and edited.digest != changes[0].digest
    assert edited.version.startswith("qa@")

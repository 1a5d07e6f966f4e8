"""The engine client's error table: every exception aiohttp can raise to it has its own row, a
timeout is a 504 and every other failure a 502 (as the gateway has always answered), and a
class missing from the table fails the check, so a newer aiohttp cannot slip one past it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import aiohttp
import pytest

from lockgate.serving.upstream import ERROR_MAP, TIMED_OUT, UNREACHABLE, UPSTREAM_ERRORS, failure_for


def aiohttp_subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    """``root`` and every subclass of it that aiohttp defines (other installed libraries may
    subclass its errors too, but the client never raises theirs)."""
    found = {root}
    pending = [root]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub.__module__.split(".")[0] == "aiohttp" and sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


CLIENT_RAISES = aiohttp_subclasses(aiohttp.ClientError) | {asyncio.TimeoutError}


def unmapped(classes: Iterable[type[BaseException]], table: Mapping[type[BaseException], object]) -> list[str]:
    """The names of the classes without a row of their own in ``table``."""
    return sorted(c.__name__ for c in classes if c not in table)


def test_every_exception_the_client_can_raise_is_mapped() -> None:
    assert len(CLIENT_RAISES) > 20, "the walk found aiohttp's exception classes"
    assert unmapped(CLIENT_RAISES, ERROR_MAP) == [], "unmapped aiohttp exception types"


def test_a_class_missing_from_the_table_fails_the_check() -> None:
    table = {cls: failure for cls, failure in ERROR_MAP.items() if cls is not aiohttp.ClientPayloadError}
    assert unmapped(CLIENT_RAISES, table) == ["ClientPayloadError"]


def test_a_timeout_is_a_504_and_every_other_failure_a_502() -> None:
    for cls in CLIENT_RAISES:
        assert ERROR_MAP[cls] == (TIMED_OUT if issubclass(cls, TimeoutError) else UNREACHABLE), cls.__name__
    assert TIMED_OUT.status == 504 and UNREACHABLE.status == 502


def test_the_gateway_catches_exactly_what_the_table_maps() -> None:
    assert set(UPSTREAM_ERRORS) == set(ERROR_MAP)
    assert all(issubclass(cls, UPSTREAM_ERRORS) for cls in CLIENT_RAISES)


def test_an_error_is_answered_by_its_class_or_its_nearest_mapped_base() -> None:
    assert failure_for(TimeoutError()) == TIMED_OUT  # asyncio.TimeoutError is this one
    assert failure_for(aiohttp.ServerTimeoutError("slow")) == TIMED_OUT
    assert failure_for(aiohttp.ClientPayloadError("cut off")) == UNREACHABLE

    class NewerConnectionError(aiohttp.ClientConnectionError):
        """As a newer aiohttp might add: answered like its base until it gets a row."""

    assert failure_for(NewerConnectionError()) == UNREACHABLE
    with pytest.raises(TypeError, match="not an engine error"):
        failure_for(KeyError("not aiohttp's"))

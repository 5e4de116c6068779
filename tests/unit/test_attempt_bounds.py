"""What one failed attempt keeps is bounded: the head of its error and the tail of its
traceback, in UTF-8 bytes, cut on a character boundary and saying how much there was."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from headwater.contracts import TaskAttemptFailed
from headwater.contracts.tasks import ATTEMPT_ERROR_BYTES, ATTEMPT_TRACEBACK_BYTES, head, tail


def attempt(error: str, traceback: str = "") -> TaskAttemptFailed:
    return TaskAttemptFailed(
        event_id="attempt-failed:x",
        fingerprint="0" * 64,
        dataset="daily",
        partition_key="2024-01-01",
        request=1,
        attempt=1,
        error=error,
        traceback=traceback,
        executor="host-1",
        at=datetime.now(UTC),
    )


def test_short_text_is_kept_whole() -> None:
    assert head("ValueError: x", 4096) == "ValueError: x"
    assert tail("Traceback\nValueError: x\n", 2048) == "Traceback\nValueError: x\n"


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_long_text_keeps_its_head_or_tail_within_the_limit(char: str) -> None:
    text = "start " + char * 10_000 + " end"
    size = len(text.encode())
    kept = head(text, ATTEMPT_ERROR_BYTES)
    assert len(kept.encode()) <= ATTEMPT_ERROR_BYTES
    assert kept.startswith("start ")
    assert kept.endswith(f" [... {size} bytes in all]")
    kept = tail(text, ATTEMPT_TRACEBACK_BYTES)
    assert len(kept.encode()) <= ATTEMPT_TRACEBACK_BYTES
    assert kept.startswith(f"[... {size} bytes in all]\n")
    assert kept.endswith(" end")


def test_the_event_refuses_what_was_not_bounded() -> None:
    attempt(head("e" * 100_000, ATTEMPT_ERROR_BYTES), tail("t" * 100_000, ATTEMPT_TRACEBACK_BYTES))
    with pytest.raises(ValidationError, match="error"):
        attempt("e" * (ATTEMPT_ERROR_BYTES + 1))
    with pytest.raises(ValidationError, match="traceback"):
        attempt("e", "t" * (ATTEMPT_TRACEBACK_BYTES + 1))

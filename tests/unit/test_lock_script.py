"""The one-exec lock + facts script, run by a real bash against a lock file in a temp dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import homekube.transport.base as tb


def test_lock_then_script_then_hold_until_stdin_closes(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb, "LOCK_PATH", str(tmp_path / "homekube.lock"))
    # `cat` in the script must read /dev/null, not the rest of stdin (the hold)
    script = "echo facts; cat; printf 'END\\n'"
    first = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write(tb.locked_script("run one", script))
    first.stdin.flush()
    assert first.stdout.readline() == "LOCKED\n"
    assert first.stdout.readline() == "facts\n"
    assert first.stdout.readline() == "END\n"
    assert first.poll() is None  # still holding the lock

    second = subprocess.run(["bash", "-s"], input=tb.locked_script("run two", script),
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 75
    assert second.stdout.splitlines() == ["BUSY", "run one"]  # the script never ran

    first.stdin.close()  # the operator is done (or its connection dropped)
    assert first.wait(timeout=30) == 0
    third = subprocess.run(["bash", "-s"], input=tb.locked_script("run three", script),
                           capture_output=True, text=True, timeout=30)
    assert third.returncode == 0 and third.stdout.splitlines() == ["LOCKED", "facts", "END"]

"""The apply script: atomic writes, step markers, and no partial execution (run for real in bash)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from homekube.plan.model import Change, Run, WriteFile
from homekube.plan.script import failed_step, render, strip_marks


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, timeout=30)


def change(*actions: WriteFile | Run, summary: str = "x") -> Change:
    return Change("h", "p", "r", summary, "why", tuple(actions))


def test_write_file_atomic_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.conf"
    uid = os.getuid()
    owner = "root" if uid == 0 else str(uid)
    res = bash(render([change(WriteFile(str(target), b"a = 1\n", 0o640, owner, owner))]))
    assert res.returncode == 0, res.stderr
    assert target.read_bytes() == b"a = 1\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".homekube")]
    assert failed_step(res.stdout) is None


def test_failure_names_step(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    script = render([
        change(Run(f"touch {ok}"), summary="first"),
        change(Run("echo boom >&2; false"), summary="second"),
        change(Run(f"touch {tmp_path / 'never'}"), summary="third"),
    ])
    res = bash(script)
    assert res.returncode != 0
    assert failed_step(res.stdout) == 1
    assert ok.exists() and not (tmp_path / "never").exists()
    assert "boom" in res.stdout  # a step's stderr is merged into its stdout, in order
    assert "@@homekube" not in strip_marks(res.stdout)


def test_truncated_script_runs_nothing(tmp_path: Path) -> None:
    """A connection cut mid-upload must leave neither a partial file nor any side effect."""
    target = tmp_path / "big.bin"
    marker = tmp_path / "ran"
    script = render([change(Run(f"touch {marker}")), change(WriteFile(str(target), os.urandom(50_000), 0o600,
                                                                     "root" if os.getuid() == 0 else str(os.getuid()),
                                                                     "root" if os.getuid() == 0 else str(os.getuid())))])
    for cut in (len(script) // 3, len(script) // 2, len(script) - 20):
        res = bash(script[:cut])
        assert not marker.exists(), f"side effect after cut at {cut}"
        assert not target.exists(), f"partial file after cut at {cut}"
        del res
    assert not list(tmp_path.glob(".homekube*"))


def test_corrupted_upload_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "f"
    owner = "root" if os.getuid() == 0 else str(os.getuid())
    script = render([change(WriteFile(str(target), b"hello world\n" * 100, 0o644, owner, owner))])
    # flip one base64 character inside the heredoc
    i = script.index("HOMEKUBE_EOF\n") + len("HOMEKUBE_EOF\n") + 10
    bad = script[:i] + ("A" if script[i] != "A" else "B") + script[i + 1 :]
    res = bash(bad)
    assert res.returncode != 0
    assert not target.exists()

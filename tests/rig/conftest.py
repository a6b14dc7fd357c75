"""One lab of three real hosts for the whole session (booting one costs ~3 s, building ~70 s).

`down()` first clears whatever a crashed earlier run left; `down()` at the end leaves the
machine as it was (the base image, key, mirror and Debian repository stay cached for the next run).
Tests that need a pristine server should not mutate shared state they cannot undo.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from homekube import lab as hklab


@pytest.fixture(scope="session")
def _lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hklab.Lab, Path]]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the lab needs root on Linux (network namespaces, systemd-nspawn)")
    config = tmp_path_factory.mktemp("lab") / "homekube-lab.yaml"
    hklab.down()
    lab = hklab.up(3, config_path=config)
    try:
        yield lab, config
    finally:
        hklab.down()


@pytest.fixture(scope="session")
def lab(_lab_session: tuple[hklab.Lab, Path]) -> hklab.Lab:
    """Hosts h1..h3, up and ready (sshd accepts the lab key, systemd finished booting)."""
    return _lab_session[0]


@pytest.fixture(scope="session")
def lab_config(_lab_session: tuple[hklab.Lab, Path]) -> Path:
    """The cluster.yaml that `up` wrote for the session's lab."""
    return _lab_session[1]


@pytest.fixture()
def fresh_lab(tmp_path: Path) -> Iterator[tuple[hklab.Lab, Path]]:
    """Three brand-new hosts for a test that needs pristine servers (~3 s)."""
    hklab.down()
    config = tmp_path / "homekube-lab.yaml"
    lab = hklab.up(3, config_path=config)
    yield lab, config

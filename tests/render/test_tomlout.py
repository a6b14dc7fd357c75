"""The TOML writer: whatever it accepts reads back identical through tomllib."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homekube.render.tomlout import dumps

keys = st.one_of(st.text(min_size=1, max_size=12),
                 st.sampled_from(["io.containerd.cri.v1.images", "SystemdCgroup", "a b", "x\"y"]))
scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20))
arrays = st.one_of(st.lists(st.text(max_size=8), max_size=4), st.lists(st.integers(0, 9), max_size=4),
                   st.lists(st.booleans(), min_size=1, max_size=3))


def tables(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.one_of(scalars, arrays)
    if depth == 0:
        return st.dictionaries(keys, leaf, max_size=4)
    inner = tables(depth - 1)
    return st.dictionaries(keys, st.one_of(leaf, inner, st.lists(inner, min_size=1, max_size=2)),
                           max_size=4)


@settings(max_examples=300, deadline=None)
@given(tables(3))
def test_everything_written_reads_back(data: dict[str, Any]) -> None:
    assert tomllib.loads(dumps(data)) == data


def test_layout_of_a_containerd_like_document() -> None:
    text = dumps({"version": 3, "plugins": {"io.containerd.cri.v1.images": {
        "snapshotter": "overlayfs", "pinned_images": {}, "registry": {"config_path": "/x"}}}})
    assert text == (
        'version = 3\n\n[plugins."io.containerd.cri.v1.images"]\nsnapshotter = "overlayfs"\n\n'
        '[plugins."io.containerd.cri.v1.images".pinned_images]\n\n'
        '[plugins."io.containerd.cri.v1.images".registry]\nconfig_path = "/x"\n'
    )


def test_arrays_of_tables() -> None:
    text = dumps({"registry": [{"location": "a:5000", "insecure": True}, {"location": "b"}]})
    assert text == ('[[registry]]\nlocation = "a:5000"\ninsecure = true\n\n'
                    '[[registry]]\nlocation = "b"\n')


@pytest.mark.parametrize("bad", [{"x": 1.5}, {"x": None}, {"x": [1, "a"]}, {1: "x"}])
def test_refuses_what_it_cannot_write(bad: dict[Any, Any]) -> None:
    with pytest.raises(TypeError):
        dumps(bad)

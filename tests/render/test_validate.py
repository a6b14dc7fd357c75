"""Validate what the renderers produce against upstream schemas, and the YAML writer itself.

* Built-in Kubernetes objects: ``kubernetes_validate`` in strict mode (no unknown fields) with
  the schema set of the cluster's minor. kubernetes-validate 1.37.0 ships schemas for
  1.25.0 … 1.37.0, so 1.34–1.37 (everything homekube supports) have an exact match; the code
  still picks the closest available version at or above the minor, and says which.
* Calico objects are CRDs (no schema in kubernetes-validate): they must load into the typed
  ``operator.tigera.io/v1`` models and dump back unchanged.
* kubeadm/kubelet/kube-proxy documents must load into the typed models and dump back unchanged.
* The YAML writer: whatever string goes in comes back identical through a YAML 1.1 reader and a
  YAML 1.2 reader (hypothesis), and the classic YAML 1.1 traps are quoted.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version
from ruamel.yaml import YAML
from test_golden import CASES, RENDERED, config  # the four clusters and their renders

from homekube.config.model import SUPPORTED_KUBERNETES
from homekube.render import calico_types as calico
from homekube.render import kubeadm_types as kt
from homekube.render import kubernetes as k8s
from homekube.render.flannel import flannel_objects
from homekube.render.yamlout import dump, dump_all, needs_quotes

CALICO_MODELS: dict[str, type[kt.KubeModel]] = {
    "Installation": calico.Installation,
    "APIServer": calico.APIServer,
}
KUBEADM_MODELS: dict[str, type[kt.KubeModel]] = {
    "InitConfiguration": kt.InitConfiguration,
    "ClusterConfiguration": kt.ClusterConfiguration,
    "JoinConfiguration": kt.JoinConfiguration,
    "KubeletConfiguration": kt.KubeletConfiguration,
    "KubeProxyConfiguration": kt.KubeProxyConfiguration,
}


def schema_version(minor: str) -> str:
    """The closest schema set kubernetes-validate ships at or above ``minor`` (e.g. 1.36.0)."""
    available: list[str] = sorted(set(kubernetes_validate.utils.all_versions()), key=Version)
    for v in available:
        if Version(v) >= Version(minor):
            return str(v)
    pytest.skip(f"kubernetes-validate has no schemas for Kubernetes >= {minor}")


def test_schemas_exist_for_every_supported_minor() -> None:
    for minor in SUPPORTED_KUBERNETES:
        assert schema_version(minor) == f"{minor}.0"


def _builtin_params() -> list[tuple[str, int]]:
    out = []
    for case in CASES:
        for i, obj in enumerate(k8s.all_cluster_objects(config(case))):
            if obj["kind"] not in CALICO_MODELS:
                out.append((case, i))
    return out


@pytest.mark.parametrize(("case", "index"), _builtin_params())
def test_builtin_objects_validate_strictly(case: str, index: int) -> None:
    cfg = config(case)
    obj = k8s.all_cluster_objects(cfg)[index]
    version = schema_version(cfg.kubernetes.minor)
    try:
        used = kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (schemas {version}): {e.message}")
    assert used == cfg.kubernetes.minor


@pytest.mark.parametrize("case", list(CASES))
def test_calico_objects_load_into_the_typed_model(case: str) -> None:
    for kernel_has_ipip in (True, False):
        for obj in k8s.calico_installation(config(case), kernel_has_ipip=kernel_has_ipip):
            model = CALICO_MODELS[obj["kind"]].model_validate(obj)
            assert model.to_dict() == obj


@pytest.mark.parametrize("case", list(CASES))
def test_rendered_files_load_into_the_typed_models(case: str) -> None:
    """Parse the rendered text (as a reader would) and round-trip every document."""
    loader = YAML(typ="safe", pure=True)
    seen = set()
    for name, text in RENDERED[case].items():
        if not name.endswith(".yaml"):
            continue
        for doc in loader.load_all(text):
            models = KUBEADM_MODELS if name.startswith("kubeadm") else CALICO_MODELS
            if doc["kind"] not in models:
                continue
            seen.add(doc["kind"])
            assert models[doc["kind"]].model_validate(doc).to_dict() == doc, name
    want = {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
            "KubeProxyConfiguration"}
    if config(case).network.cni == "calico":
        want.add("Installation")
    assert want <= seen


def test_flannel_validates_for_every_supported_minor() -> None:
    for case in ("lab-containerd-flannel", "single-dualstack"):
        cfg = config(case).model_copy(
            update={"network": config(case).network.model_copy(update={"cni": "flannel"})})
        objects = flannel_objects(cfg)
        assert len(objects) == 6
        for minor in SUPPORTED_KUBERNETES:
            for obj in objects:
                kubernetes_validate.validate(obj, schema_version(minor), strict=True)


def test_headlamp_validates_for_every_supported_minor() -> None:
    objects = k8s.headlamp_objects(config("single-ipv4"))
    for minor in SUPPORTED_KUBERNETES:
        for obj in objects:
            kubernetes_validate.validate(obj, schema_version(minor), strict=True)


# --------------------------------------------------------------------------------------------
# purity: nothing in homekube.render does I/O
# --------------------------------------------------------------------------------------------

FORBIDDEN = {"asyncio", "asyncssh", "httpx", "lightkube", "os", "socket", "subprocess", "urllib"}


def test_render_package_imports_no_io_modules() -> None:
    root = Path(k8s.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{path.name} calls open()"


# --------------------------------------------------------------------------------------------
# the YAML writer
# --------------------------------------------------------------------------------------------


def _load11(text: str) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.version = (1, 1)
    return yaml.load(text)


def _load12(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


TRAPS = [
    "on", "On", "ON", "off", "yes", "Yes", "no", "NO", "y", "Y", "n", "N", "true", "False",
    "null", "Null", "~", "", "1.36", "0755", "0o755", "0x1F", "0b101", "1_000",
    "12:30", "190:20:30.15", "1e3", "1E+3", ".inf", "-.Inf", ".NaN", "2001-01-01",
    "2001-12-14t21:59:43.10-05:00", "<<", "=", "+1", "-1", "007",
]  # fmt: skip

AWKWARD = [
    "-", "- x", "a: b", "#x", "x #y", "@x", "`x", "%x", "!x", "&x", "*x", "|", ">", "[x]",
    "{x}", "1.37.1", "'q'", '"q"', "x\ny", " lead", "trail ", "tab\there", "\x00", "\u2028",
    "\ufeff", "\x85", "é", "?", "? x", ":", "x:", ",", "unix:///var/run/crio/crio.sock", "all()",
    "sha256:0000", "192.0.2.10,2001:db8:10::10",
]  # fmt: skip


@pytest.mark.parametrize("text", TRAPS)
def test_yaml11_traps_are_quoted(text: str) -> None:
    assert needs_quotes(text)
    out = dump({"key": text})
    assert out.startswith('key: "') or out.startswith("key: '"), out
    assert _load11(out) == {"key": text}
    assert _load12(out) == {"key": text}


@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_strings_round_trip(text: str) -> None:
    out = dump({"k": text, "list": [text]})
    assert _load11(out) == {"k": text, "list": [text]}
    assert _load12(out) == {"k": text, "list": [text]}


def test_plain_strings_stay_plain() -> None:
    assert dump({"a": "nftables", "b": "all()"}) == "a: nftables\nb: all()\n"


_trapish = st.text(alphabet="0123456789.:_-+eExXoObB~yYnNtTrRuUfFaAlLsS<=# \n'\"", max_size=12)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), _trapish, st.sampled_from(TRAPS + AWKWARD)))
def test_any_string_round_trips_through_yaml_1_1_and_1_2(text: str) -> None:
    data = {"value": text, "items": [text, "x"], "nested": {"k": text}}
    out = dump(data)
    assert _load11(out) == data
    assert _load12(out) == data


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=5))
def test_mapping_keys_round_trip(data: dict[str, str]) -> None:
    assert _load11(dump({"m": data})) == {"m": data}


def test_dump_all_separates_documents_and_keeps_order() -> None:
    text = dump_all([{"b": 1, "a": [True, None]}, {"taints": []}])
    assert text == "b: 1\na:\n- true\n- null\n---\ntaints: []\n"


def test_dump_refuses_floats_and_odd_keys() -> None:
    with pytest.raises(TypeError):
        dump({"x": 1.5})
    with pytest.raises(TypeError):
        dump({1: "x"})  # type: ignore[dict-item]

"""The lab's Kubernetes cluster.yaml is a valid config, and its lab-only settings are the ones
the lab machine forces (pure: rendered and parsed, no lab brought up)."""

from __future__ import annotations

from pathlib import Path

from homekube.config.loader import load_text
from homekube.lab.artifacts.pipeline import LabArtifacts
from homekube.lab.clusteryaml import YamlHost, render

SHA = "ab" * 32


def _artifacts() -> LabArtifacts:
    return LabArtifacts(
        kubernetes_version="1.36.3", kubernetes_minor="1.36", etcd_version="3.6.14", etcd_sha256=SHA,
        containerd_version="2.3.7", containerd_sha256=SHA, runc_version="1.5.2", runc_sha256=SHA,
        cni_plugins_version="1.9.1", cni_plugins_sha256=SHA, cri_tools_version="1.36.0",
        coredns_version="1.14.2", pause_version="3.10.2", flannel_version="0.28.10",
        registry="10.0.3.1:5080", image_repository="10.0.3.1:5080/k8s",
        images={}, mirror_url="http://10.0.3.1:8080", apt_repo_url="http://10.0.3.1:8080/k/",
        apt_key_url="http://10.0.3.1:8080/k/Release.key", deb_versions={}, published=True)


def test_kubernetes_lab_yaml_loads_with_absolute_eviction_floors(tmp_path: Path) -> None:
    hosts = [YamlHost(f"h{i}", f"10.0.3.{10 + i}", f"fd00:3::{10 + i}",
                      ("control-plane", "etcd", "worker") if i == 1 else ("etcd", "worker"))
             for i in (1, 2, 3)]
    text = render(hosts=hosts, etcd_sha256=SHA, mirror_url="http://10.0.3.1:8080",
                  key_path=tmp_path / "key", known_hosts_path=tmp_path / "kh",
                  state_dir=tmp_path / "state", kubernetes=_artifacts())
    cfg = load_text(text)
    assert cfg.kubernetes.enabled
    assert [h.name for h in cfg.hosts] == ["h1", "h2", "h3"]
    # the machine's shared disk must not decide whether lab nodes are Ready (DiskPressure)
    assert cfg.kubernetes.kubelet.eviction_hard == {
        "memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi",
        "nodefs.inodesFree": "5%"}

"""Pure parts of the lab artifacts: recipes vs committed modules, deb control text, OCI
digests and layer reproducibility, release tarballs, image-name mapping."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from homekube.lab.artifacts import debs, gobuild, oci, recipes, tarballs
from homekube.lab.artifacts.recipes import IMAGES, KUBERNETES, RECIPES

# --------------------------------------------------------------------------- recipes


def _go_mod_blocks(text: str, keyword: str) -> list[str]:
    """Lines of `keyword ( ... )` blocks and single `keyword x` lines of a go.mod."""
    out: list[str] = []
    block = False
    for line in text.splitlines():
        s = line.strip()
        if s == f"{keyword} (":
            block = True
            continue
        if block and s == ")":
            block = False
            continue
        if block:
            out.append(s.split("//")[0].strip())
        elif s.startswith(f"{keyword} ") and not s.endswith("("):
            out.append(s[len(keyword) + 1 :].split("//")[0].strip())
    return [x for x in out if x]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.key)
def test_committed_module_matches_its_recipe(recipe: recipes.GoRecipe) -> None:
    d = recipe.module_dir
    text = (d / "go.mod").read_text()
    assert text.startswith(f"module homekube.lab/{recipe.name}\n")
    assert (d / "go.sum").is_file()
    tools = set(_go_mod_blocks(text, "tool"))
    assert tools == set(recipe.tools)
    requires = dict(x.split() for x in _go_mod_blocks(text, "require"))
    for pkg, version in recipe.tools.items():
        # the module that provides pkg is the longest required path that prefixes it
        module = max((m for m in requires if pkg == m or pkg.startswith(m + "/")), key=len)
        assert requires[module] == version, (pkg, module)
    for module, version in recipe.upgrades.items():
        assert requires[module] == version
    replaces = {x.split(" => ")[0]: x.split(" => ")[1] for x in _go_mod_blocks(text, "replace")}
    for module, version in recipe.replaces.items():
        assert replaces[module] == f"{module} {version}"
    for module, rel in recipe.local_replaces.items():
        assert replaces[module] == rel
        assert (d / rel / "go.mod").is_file()
    for p in recipe.own_packages:
        assert list((d / p).glob("*.go")), p


def test_go_sum_pins_the_tool_modules() -> None:
    text = (KUBERNETES.module_dir / "go.sum").read_text()
    assert "k8s.io/kubernetes v1.36.3 h1:" in text
    assert "k8s.io/client-go v0.36.3 h1:" in text


def test_kubernetes_recipe_is_a_function_of_the_version() -> None:
    r = recipes.kubernetes("1.35.4", "2026-04-15T18:01:22Z")
    assert r.key == "kubernetes-1.35.4"
    assert set(r.tools.values()) == {"v1.35.4"}
    assert r.replaces["k8s.io/client-go"] == "v0.35.4"
    assert "k8s.io/sample-cli-plugin" not in r.replaces
    assert r.ldflags_x["k8s.io/component-base/version.gitVersion"] == "v1.35.4"
    assert r.ldflags_x["k8s.io/client-go/pkg/version.gitMinor"] == "35"
    assert r.binaries == tuple(sorted(recipes.KUBERNETES_COMMANDS))


def test_build_command_is_lean_and_stamped() -> None:
    argv = gobuild.build_argv(KUBERNETES, Path("/out"))
    assert argv[:4] == ["go", "build", "-trimpath", "-v"]
    flags = argv[argv.index("-ldflags") + 1]
    assert flags.startswith("-s -w ")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/client-go/pkg/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitTreeState=clean" in flags
    assert re.search(r"gitCommit=[0-9a-f]{40}\b", flags)
    assert argv[-8] == "/out/"  # one go build for all seven commands
    assert argv[-7:] == sorted(KUBERNETES.tools)
    runc = gobuild.build_argv(recipes.RUNC, Path("/out"))
    assert "seccomp" in runc[runc.index("-tags") + 1].split(",")
    assert "-extldflags -static" in runc[runc.index("-ldflags") + 1]
    # cgo only where C is unavoidable (libseccomp; flannel's UDP backend), always static
    assert {r.name for r in RECIPES if r.cgo} == {"runc", "flannel"}


def test_binary_names_follow_go_build() -> None:
    assert recipes.ETCD.binaries == ("etcdctl", "etcdutl", "etcd")  # server/v3 -> etcd
    assert recipes.FLANNEL.binaries == ("flanneld", "install-conf")
    assert recipes.PAUSE.binaries == ("pause",)
    assert recipes.PAUSE.packages == (".",)
    assert set(recipes.CNI_PLUGINS.binaries) == set(recipes.CNI_PLUGIN_NAMES)
    assert {"bridge", "host-local", "loopback", "portmap"} <= set(recipes.CNI_PLUGIN_NAMES)


def test_module_text_replaces_staging_modules() -> None:
    text = gobuild.module_text(KUBERNETES)
    assert "\tk8s.io/api => k8s.io/api v0.36.3\n" in text
    assert "replace github.com" not in text
    flannel = gobuild.module_text(recipes.FLANNEL)
    assert (
        "replace github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc => "
        "./tencentvpc-standin\n" in flannel
    )


def test_ldflags_refuse_spaces() -> None:
    bad = recipes.GoRecipe(name="x", version="1", tools={}, ldflags_x={"main.v": "a b"})
    with pytest.raises(gobuild.LabError, match="spaces"):
        gobuild.ldflags(bad)


# ------------------------------------------------------------------------------- debs


def _spec(tmp_path: Path, name: str) -> debs.DebSpec:
    for d in ("k8s", "cri", "cni"):
        (tmp_path / d).mkdir(exist_ok=True)
    for b in ("kubeadm", "kubelet", "kubectl"):
        (tmp_path / "k8s" / b).write_bytes(b"x" * 3000)
    (tmp_path / "cri" / "crictl").write_bytes(b"x")
    for p in recipes.CNI_PLUGIN_NAMES:
        (tmp_path / "cni" / p).write_bytes(b"x" * 1025)
    specs = debs.kubernetes_debs(
        tmp_path / "k8s", "1.36.3", tmp_path / "cri", "1.36.0",
        tmp_path / "cni", recipes.CNI_PLUGIN_NAMES, "1.9.1",
    )  # fmt: skip
    return next(s for s in specs if s.package == name)


def test_kubelet_control_text(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "kubelet")
    assert spec.filename == "kubelet_1.36.3-1.1_amd64.deb"
    text = debs.control_text(spec, debs.installed_size_kib(spec))
    assert text == (
        "Package: kubelet\n"
        "Version: 1.36.3-1.1\n"
        "Architecture: amd64\n"
        f"Maintainer: {debs.MAINTAINER}\n"
        # files: kubelet 3 KiB, unit 1, default 1, two markers 1+1; 12 directories of 1
        "Installed-Size: 19\n"
        "Depends: kubernetes-cni (>= 1.2.0), mount, util-linux\n"
        "Recommends: iptables (>= 1.8.4)\n"
        "Section: net\n"
        "Priority: optional\n"
        "Homepage: https://kubernetes.io\n"
        "Description: Node agent for Kubernetes clusters\n"
        " Node agent for Kubernetes clusters.\n"
    )
    assert spec.conffiles == ("/etc/default/kubelet",)
    paths = {f.path for f in spec.files}
    assert "/usr/lib/systemd/system/kubelet.service" in paths


def test_kubeadm_has_no_dependencies_and_ships_the_dropin(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "kubeadm")
    text = debs.control_text(spec, 1)
    assert "Depends" not in text and "Section: admin\n" in text
    dropin = next(f for f in spec.files if f.path.endswith("10-kubeadm.conf"))
    assert dropin.path == "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
    lines = (dropin.text or "").splitlines()
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in lines
    assert "EnvironmentFile=-/etc/default/kubelet" in lines
    assert lines[-2:] == [
        "ExecStart=",
        "ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS "
        "$KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS",
    ]
    assert any("--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf" in ln for ln in lines)
    assert any("--kubeconfig=/etc/kubernetes/kubelet.conf" in ln for ln in lines)
    assert any("--config=/var/lib/kubelet/config.yaml" in ln for ln in lines)


def test_kubernetes_cni_puts_plugins_in_opt_cni_bin(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "kubernetes-cni")
    assert spec.version == "1.9.1-1.1"
    bins = sorted(f.path for f in spec.files if f.path.startswith("/opt/cni/bin/"))
    assert bins == sorted(f"/opt/cni/bin/{p}" for p in recipes.CNI_PLUGIN_NAMES)
    assert all(f.mode == 0o755 for f in spec.files if f.source is not None)


# -------------------------------------------------------------------------------- OCI


def _layer(store: oci.BlobStore, src: Path) -> oci.Blob:
    files = [oci.LayerFile("usr/local/bin/tool", src), oci.LayerFile("etc/tool.conf", src, 0o644)]
    return store.add_layer(lambda tar: oci.add_files(tar, files, (("tmp", 0o1777),)))


def test_layers_are_reproducible_and_diff_id_is_the_plain_tar(tmp_path: Path) -> None:
    src = tmp_path / "bin"
    src.write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
    a = _layer(oci.BlobStore(tmp_path / "a"), src)
    src.touch()  # a newer mtime on disk must not change the layer
    b = _layer(oci.BlobStore(tmp_path / "b"), src)
    assert a == b
    packed = (tmp_path / "a" / "blobs" / "sha256" / a.digest.split(":")[1]).read_bytes()
    assert a.digest == "sha256:" + hashlib.sha256(packed).hexdigest()
    assert a.size == len(packed)
    plain = gzip.decompress(packed)
    assert a.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == ["etc", "etc/tool.conf", "tmp", "usr", "usr/local", "usr/local/bin",
                     "usr/local/bin/tool"]  # fmt: skip
    assert {m.mtime for m in members} == {tarballs.MTIME}
    assert {(m.uid, m.gid) for m in members} == {(0, 0)}
    modes = {m.name: m.mode for m in members}
    assert modes["tmp"] == 0o1777 and modes["usr/local/bin/tool"] == 0o755
    assert modes["etc/tool.conf"] == 0o644


def test_config_and_manifest_digests(tmp_path: Path) -> None:
    store = oci.BlobStore(tmp_path)
    layer = oci.Blob("sha256:" + "a" * 64, 10, oci.LAYER_TYPE, diff_id="sha256:" + "b" * 64)
    image = store.add_image([layer], oci.ImageConfig(entrypoint=("/pause",)))
    config = json.loads(store.path(image.config.digest).read_bytes())
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]}
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["Env"] == [f"PATH={oci.DEFAULT_PATH}"]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == oci.MANIFEST_TYPE
    assert manifest["config"] == {"mediaType": oci.CONFIG_TYPE, "digest": image.config.digest,
                                  "size": image.config.size}  # fmt: skip
    assert manifest["layers"] == [{"mediaType": oci.LAYER_TYPE, "digest": layer.digest, "size": 10}]
    assert image.manifest_digest == "sha256:" + hashlib.sha256(image.manifest).hexdigest()
    # canonical: the same inputs give the same bytes, keys sorted, no whitespace
    again = oci.BlobStore(tmp_path / "x").add_image([layer], oci.ImageConfig(entrypoint=("/pause",)))
    assert again.manifest == image.manifest
    assert b" " not in image.manifest and image.manifest == oci.canonical_json(manifest)
    rec = oci.ImageRecord(image.manifest_digest, image.config, image.layers)
    assert oci.ImageRecord.from_json(rec.to_json()) == rec


# ---------------------------------------------------------------------------- tarballs


def test_release_tarballs_are_reproducible(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    bins.mkdir()
    for b in ("containerd", "containerd-shim-runc-v2", "ctr"):
        (bins / b).write_bytes(b.encode() * 100)
    one = tarballs.containerd_release(bins, "2.3.7", tmp_path / "m1")
    (bins / "ctr").touch()
    two = tarballs.containerd_release(bins, "2.3.7", tmp_path / "m2")
    assert one == two
    assert one.rel_path == "containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz"
    sums = (tmp_path / "m1" / "containerd" / "v2.3.7" / "SHA256SUMS").read_text()
    assert sums == f"{one.sha256}  containerd-2.3.7-linux-amd64.tar.gz\n"
    with tarfile.open(tmp_path / "m1" / one.rel_path) as tar:
        assert tar.getnames() == ["bin", "bin/containerd", "bin/containerd-shim-runc-v2", "bin/ctr"]
        assert {m.mode for m in tar.getmembers()} == {0o755}


def test_etcd_tarball_layout(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    bins.mkdir()
    for b in ("etcd", "etcdctl", "etcdutl"):
        (bins / b).write_bytes(b"#")
    rf = tarballs.etcd_release(bins, "3.6.14", tmp_path)
    assert rf.rel_path == "etcd/v3.6.14/etcd-v3.6.14-linux-amd64.tar.gz"
    with tarfile.open(tmp_path / rf.rel_path) as tar:
        assert tar.getnames() == [
            "etcd-v3.6.14-linux-amd64",
            "etcd-v3.6.14-linux-amd64/etcd",
            "etcd-v3.6.14-linux-amd64/etcdctl",
            "etcd-v3.6.14-linux-amd64/etcdutl",
        ]


# ------------------------------------------------------------------------ image names


@pytest.mark.parametrize(
    ("upstream", "stripped"),
    [
        ("ghcr.io/flannel-io/flannel:v0.28.10", "flannel-io/flannel:v0.28.10"),
        ("registry.k8s.io/pause:3.10.2", "pause:3.10.2"),
        ("quay.io/tigera/operator:v1.42.3", "tigera/operator:v1.42.3"),
        ("localhost/x:1", "x:1"),
        ("example.com:5000/a/b:c", "a/b:c"),
        ("docker.io/library/busybox:1.36", "library/busybox:1.36"),
        ("busybox:1.36", "busybox:1.36"),
        ("headlamp-k8s/headlamp:v0.43.0", "headlamp-k8s/headlamp:v0.43.0"),
    ],
)
def test_strip_registry(upstream: str, stripped: str) -> None:
    assert recipes.strip_registry(upstream) == stripped


def test_lab_image_names() -> None:
    r = "10.77.3.1:5080"
    got = {s.upstream: s.ref(r) for s in IMAGES}
    assert got == {
        "registry.k8s.io/kube-apiserver:v1.36.3": f"{r}/kube-apiserver:v1.36.3",
        "registry.k8s.io/kube-controller-manager:v1.36.3": f"{r}/kube-controller-manager:v1.36.3",
        "registry.k8s.io/kube-scheduler:v1.36.3": f"{r}/kube-scheduler:v1.36.3",
        "registry.k8s.io/kube-proxy:v1.36.3": f"{r}/kube-proxy:v1.36.3",
        "registry.k8s.io/pause:3.10.2": f"{r}/pause:3.10.2",
        # kubeadm with a custom imageRepository drops CoreDNS's extra path component
        "registry.k8s.io/coredns/coredns:v1.14.2": f"{r}/coredns:v1.14.2",
        "ghcr.io/flannel-io/flannel:v0.28.10": f"{r}/flannel-io/flannel:v0.28.10",
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3":
            f"{r}/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
        "localhost/homekube/hkecho:1.0.0": f"{r}/homekube/hkecho:1.0.0",
        # the previous minor's kubeadm images (kubeadm 1.35's CoreDNS and pause versions)
        "registry.k8s.io/kube-apiserver:v1.35.4": f"{r}/kube-apiserver:v1.35.4",
        "registry.k8s.io/kube-controller-manager:v1.35.4": f"{r}/kube-controller-manager:v1.35.4",
        "registry.k8s.io/kube-scheduler:v1.35.4": f"{r}/kube-scheduler:v1.35.4",
        "registry.k8s.io/kube-proxy:v1.35.4": f"{r}/kube-proxy:v1.35.4",
        "registry.k8s.io/pause:3.10.1": f"{r}/pause:3.10.1",
        "registry.k8s.io/coredns/coredns:v1.13.1": f"{r}/coredns:v1.13.1",
    }  # fmt: skip
    for s in IMAGES:
        if not s.kubeadm:
            assert f"{r}/{recipes.strip_registry(s.upstream)}" == s.ref(r)
        assert recipes.lab_image(s.upstream, r) == s.ref(r)
    assert recipes.lab_image("quay.io/tigera/operator:v1.42.3", r) == f"{r}/tigera/operator:v1.42.3"


def test_images_use_only_built_binaries() -> None:
    built = {r.key: r for r in RECIPES}
    for r in reversed(RECIPES):  # a name stands for the first recipe of that name
        built[r.name] = r
    for s in IMAGES:
        for f in s.files:
            assert f.binary in built[f.recipe].binaries, (s.repository, f)
        assert not s.entrypoint or s.entrypoint[0].lstrip("/") in {f.path for f in s.files}


def test_each_release_names_its_own_kubeadm_images() -> None:
    """An image of another version than the default names its recipe by key, so the 1.35
    control plane gets 1.35 binaries, not the default's."""
    for rel in recipes.RELEASES:
        tag = f"v{rel.kubernetes.version}"
        cp = [s for s in IMAGES if s.kubeadm and s.tag == tag]
        assert {s.repository for s in cp} == {
            "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"}
        first = rel is recipes.RELEASES[0]
        assert {f.recipe for s in cp for f in s.files} == {
            "kubernetes" if first else rel.kubernetes.key}
        pause = next(s for s in IMAGES if s.repository == "pause" and s.tag == rel.pause.version)
        assert pause.files[0].recipe == ("pause" if first else rel.pause.key)
    assert recipes.release().kubernetes is KUBERNETES
    assert recipes.release("1.35").kubernetes.version == "1.35.4"
    assert recipes.release("1.35.4").minor == "1.35"
    with pytest.raises(KeyError, match=r"builds no Kubernetes 1\.34"):
        recipes.release("1.34")


def test_kubeadm_versions_match_the_render_table() -> None:
    """The lab's pause image per minor is the one homekube pins in containerd's config."""
    from homekube.render.kubernetes import PAUSE_VERSIONS

    for rel in recipes.RELEASES:
        assert PAUSE_VERSIONS[rel.minor] == rel.pause.version


def test_build_errors_quotes_the_compiler_not_the_package_list(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text(
        "k8s.io/client-go/kubernetes\n"
        "# github.com/flannel-io/flannel/pkg/backend/udp\n"
        "/m/udp_network_amd64.go:107:3: undefined: runCProxy\n"
        "/m/udp_network_amd64.go:125:4: undefined: stopProxy\n"
        "github.com/flannel-io/flannel/pkg/backend/vxlan\n"
        "github.com/flannel-io/flannel/pkg/ipmatch\n"
    )
    assert gobuild.build_errors(log) == (
        "# github.com/flannel-io/flannel/pkg/backend/udp\n"
        "/m/udp_network_amd64.go:107:3: undefined: runCProxy\n"
        "/m/udp_network_amd64.go:125:4: undefined: stopProxy"
    )
    log.write_text("a\nb\nsignal: killed\n")
    assert gobuild.build_errors(log) == "a\nb\nsignal: killed"


# ------------------------------------------------------------------ selection by minor


def test_a_minor_selects_its_own_recipes_and_the_shared_ones() -> None:
    from homekube.lab.artifacts import pipeline
    from homekube.lab.system import LabError

    def keys(rs: Iterable[recipes.GoRecipe]) -> set[str]:
        return {r.key for r in rs}

    default, previous = recipes.RELEASES
    shared = keys(RECIPES) - keys(default.recipes) - keys(previous.recipes)
    assert shared and not any(k.startswith(("kubernetes-", "pause-", "coredns-")) for k in shared)
    assert pipeline._selected(None) == RECIPES
    for rel, other in ((default, previous), (previous, default)):
        picked = pipeline._selected(None, [rel.minor])
        assert keys(picked) == shared | keys(rel.recipes)
        assert not keys(picked) & keys(other.recipes)
        assert pipeline._selected(None, [rel.kubernetes.version]) == picked
    assert pipeline._selected(["kubernetes"], ["1.35"]) == (previous.kubernetes,)
    assert keys(pipeline._selected(None, ["1.35", "1.36"])) == keys(RECIPES)
    # a cluster at an older minor also needs the default one, which it upgrades to
    assert pipeline.minors_for(None) == ("1.36",)
    assert pipeline.minors_for("1.35") == pipeline.minors_for("1.35.4") == ("1.36", "1.35")
    with pytest.raises(LabError, match=r"builds no Kubernetes 1\.34"):
        pipeline.minors_for("1.34")
    with pytest.raises(LabError, match=r"builds no Kubernetes 1\.34"):
        pipeline._selected(None, ["1.34"])


def test_every_kubeadm_image_belongs_to_exactly_one_minor() -> None:
    owners = {s: [rel.minor for rel in recipes.RELEASES if s in rel.images] for s in IMAGES}
    for s, minors in owners.items():
        assert len(minors) == (1 if s.kubeadm else 0), (s.ref("R"), minors)
    for rel in recipes.RELEASES:
        assert {s.tag for s in rel.images} == {
            f"v{rel.kubernetes.version}", rel.pause.version, f"v{rel.coredns.version}"}

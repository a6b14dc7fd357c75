"""The lab's Kubernetes artifacts, used on lab hosts the way homekube's product code uses them.

The artifacts are built when missing (cached outside the work tree; CI builds them first with
`homekube lab artifacts`) and published into the session's lab. Hosts then install the debs
through the product's own repository files (render.kubernetes.repo_files), run containerd +
runc from the release tarballs and pull from the lab registry over plain HTTP through a
certs.d hosts.toml. Every test undoes what it installed, so later tests find plain hosts.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Iterator

import pytest

from homekube import lab as hklab
from homekube.config.loader import load_text
from homekube.lab import artifacts, settings
from homekube.lab.artifacts import gobuild, recipes
from homekube.lab.artifacts.pipeline import LabArtifacts
from homekube.render.kubernetes import repo_files
from tests.conftest import GOOD
from tests.rig.helpers import sh

pytestmark = pytest.mark.rig

R = settings.REGISTRY_HOST


@pytest.fixture(scope="module")
def arts(lab: hklab.Lab) -> LabArtifacts:
    """Built (when missing), packed and published into the session's lab."""
    a = artifacts.ensure(lambda line: print(f"artifacts: {line}", flush=True))
    assert a.published
    return a


# ------------------------------------------------------------------------ kubeadm, registry


def assert_release_served(rel: recipes.KubeRelease, arts: LabArtifacts) -> None:
    """The minor's own kubeadm asks for exactly the images of that minor the lab registry
    serves (h1 pulls their manifests), and its apt repository is published."""
    kubeadm = gobuild.entry_dir(rel.kubernetes) / "kubeadm"
    listed = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version",
         f"v{rel.kubernetes.version}", "--image-repository", arts.image_repository],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    # kubeadm lists its own etcd image too; homekube's etcd is external, so there is none
    wanted = {i for i in listed if not i.startswith(f"{R}/etcd:")}
    assert f"{R}/pause:{rel.pause.version}" in listed
    assert f"{R}/coredns:v{rel.coredns.version}" in listed
    assert wanted == {s.ref(R) for s in rel.images if s.kubeadm}
    repo = hklab.current()
    assert repo is not None
    assert (repo.dir / f"mirror/kubernetes/v{rel.minor}/deb/InRelease").is_file()
    assert_registry_serves(rel.images)


def assert_registry_serves(specs: Iterable[recipes.ImageSpec]) -> None:
    assert hklab.status().registry_running
    catalog = sh("h1", f"curl -sSf http://{R}/v2/_catalog")
    for s in specs:
        assert f'"{s.repository}"' in catalog
        code = sh(
            "h1",
            f"curl -s -o /dev/null -w '%{{http_code}}' -I -H "
            f"'Accept: application/vnd.oci.image.manifest.v1+json' "
            f"http://{R}/v2/{s.repository}/manifests/{s.tag}",
        )
        assert code == "200", s.ref(R)


def binary_says(recipe: recipes.GoRecipe, binary: str, *args: str) -> str:
    """What a built binary prints (stdout + stderr)."""
    exe = gobuild.entry_dir(recipe) / binary
    cp = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
    return cp.stdout + cp.stderr


def test_kubeadm_asks_for_exactly_the_images_the_registry_serves(
    lab: hklab.Lab, arts: LabArtifacts
) -> None:
    """The default minor here; the previous one (1.35, which only the upgrade test needs and
    CI builds in the background meanwhile) in test_k8s_upgrade.py."""
    default = recipes.RELEASES[0]
    assert_release_served(default, arts)
    assert arts.pause_image == f"{R}/pause:3.10.2"
    assert arts.coredns_image == f"{R}/coredns:v1.14.2"
    # every image that is no minor's own (flannel, hkecho) is served too
    own = {s for rel in recipes.RELEASES for s in rel.images}
    assert_registry_serves(s for s in recipes.IMAGES if s not in own)


def test_built_binaries_report_their_versions(arts: LabArtifacts) -> None:
    out = binary_says
    assert out(recipes.KUBERNETES, "kubelet", "--version").strip() == "Kubernetes v1.36.3"
    assert out(recipes.KUBERNETES, "kube-apiserver", "--version").strip() == "Kubernetes v1.36.3"
    assert "v1.36.3" in out(recipes.KUBERNETES, "kubectl", "version", "--client")
    assert "etcd Version: 3.6.14" in out(recipes.ETCD, "etcd", "--version")
    assert "etcdctl version: 3.6.14" in out(recipes.ETCD, "etcdctl", "version")
    assert "v2.3.7" in out(recipes.CONTAINERD, "containerd", "--version")
    runc = out(recipes.RUNC, "runc", "--version")
    assert "runc version 1.5.2" in runc and "libseccomp: 2.5" in runc
    assert "CoreDNS-1.14.2" in out(recipes.COREDNS, "coredns", "-version")
    assert "v0.28.10" in out(recipes.FLANNEL, "flanneld", "--version")
    assert out(recipes.CRI_TOOLS, "crictl", "--version").strip() == "crictl version v1.36.0"


# ------------------------------------------------------------------------------ apt, debs

APT_HOST = "h3"


@pytest.fixture()
def clean_apt_host(lab: hklab.Lab) -> Iterator[str]:
    yield APT_HOST
    hklab.host_exec(
        APT_HOST,
        "systemctl stop kubelet 2>/dev/null; "
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq kubeadm kubelet kubectl cri-tools "
        "kubernetes-cni >/dev/null; rm -f /etc/apt/sources.list.d/kubernetes.list "
        "/etc/apt/keyrings/kubernetes-apt-keyring.gpg; rm -rf /etc/kubernetes /var/lib/kubelet "
        "/opt/cni /etc/cni; apt-get update -qq",
        timeout=300,
    )


def test_product_repository_path_installs_the_kubernetes_packages(
    arts: LabArtifacts, clean_apt_host: str
) -> None:
    host = clean_apt_host
    cfg = load_text(GOOD.replace("artifacts: {mirror: null}", f"artifacts: {{mirror: '{arts.mirror_url}'}}"))
    rf = next(r for r in repo_files(cfg, "debian") if r.path.endswith("/kubernetes.list"))
    assert rf.key_url == arts.apt_key_url
    assert f"{arts.apt_repo_url} /" in rf.content
    # what homekube's packages phase runs (components/kubernetes.py), then apt as a user would
    sh(host, f"install -d -m 0755 /etc/apt/keyrings && curl -fsSL --retry 3 {shlex.quote(rf.key_url)}"
             f" | gpg --dearmor --yes -o {rf.keyring} && chmod 0644 {rf.keyring}")  # fmt: skip
    sh(host, f"cat > {rf.path} <<'EOF'\n{rf.content}EOF")
    sh(host, "apt-get update -qq", timeout=300)
    sh(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubeadm kubelet kubectl "
             "cri-tools >/dev/null", timeout=600)  # fmt: skip
    assert sh(host, "kubeadm version -o short").strip() == "v1.36.3"
    assert sh(host, "kubelet --version").strip() == "Kubernetes v1.36.3"
    assert "v1.36.3" in sh(host, "kubectl version --client")
    assert sh(host, "crictl --version").strip() == "crictl version v1.36.0"
    versions = sh(host, "dpkg-query -W -f '${Package} ${Version}\\n' kubeadm kubelet kubectl "
                        "cri-tools kubernetes-cni")  # fmt: skip
    assert dict(ln.split() for ln in versions.splitlines()) == dict(arts.deb_versions)
    # kubernetes-cni came in as kubelet's dependency and put the plugins in /opt/cni/bin
    assert "bridge" in sh(host, "ls /opt/cni/bin").split()
    # kubelet's unit carries kubeadm's drop-in and is enabled, as with pkgs.k8s.io's packages
    unit = sh(host, "systemctl cat kubelet")
    assert "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf" in unit
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in unit
    assert sh(host, "systemctl is-enabled kubelet").strip() == "enabled"
    # a flat repository: apt lists it as "<url without the slash>  Packages"
    assert f"500 {arts.apt_repo_url.rstrip('/')}  Packages" in sh(host, "apt-cache policy kubeadm")


# ------------------------------------------------------------- containerd, runc, registry

CTR_HOST = "h2"
NS = "hk-test"


@pytest.fixture()
def containerd_host(lab: hklab.Lab, arts: LabArtifacts) -> Iterator[str]:
    """containerd + runc from the mirror's release files, running as a transient unit."""
    host = CTR_HOST
    c = f"containerd/v{arts.containerd_version}/containerd-{arts.containerd_version}-linux-amd64.tar.gz"
    r = f"runc/v{arts.runc_version}/runc.amd64"
    sh(host, f"""set -e
        cd /tmp
        curl -fsSLO {arts.release_url(c)} && curl -fsSL {arts.release_url(c.rsplit('/', 1)[0])}/SHA256SUMS -o c.sums
        sha256sum -c c.sums
        tar -C /usr/local -xzf {c.rsplit('/', 1)[1]}
        curl -fsSLO {arts.release_url(r)} && curl -fsSL {arts.release_url(r.rsplit('/', 1)[0])}/SHA256SUMS -o r.sums
        sha256sum -c r.sums
        install -m 0755 runc.amd64 /usr/local/sbin/runc
        mkdir -p /etc/containerd/certs.d/{R}
        cat > /etc/containerd/certs.d/{R}/hosts.toml <<'EOF'
server = "http://{R}"

[host."http://{R}"]
  capabilities = ["pull", "resolve"]
EOF
        systemd-run --unit=hk-test-containerd --property=OOMScoreAdjust=0 /usr/local/bin/containerd
        for i in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
        ctr version
    """)  # fmt: skip
    yield host
    hklab.host_exec(
        host,
        f"for t in $(ctr -n {NS} task ls -q 2>/dev/null); do ctr -n {NS} task kill -s KILL $t; "
        f"ctr -n {NS} task delete $t; done; systemctl stop hk-test-containerd; "
        "umount -R /run/containerd 2>/dev/null; rm -rf /etc/containerd /var/lib/containerd/* "
        "/run/containerd /usr/local/bin/containerd* /usr/local/bin/ctr /usr/local/sbin/runc "
        "/tmp/containerd-* /tmp/runc.amd64 /tmp/*.sums",
        timeout=120,
    )


def test_containerd_pulls_over_plain_http_and_runs_the_pause_image(
    arts: LabArtifacts, containerd_host: str
) -> None:
    host = containerd_host
    ctr = f"ctr -n {NS}"
    # without the hosts.toml, containerd speaks HTTPS to the registry and fails
    cp = hklab.host_exec(host, f"{ctr} images pull {arts.pause_image}", timeout=60)
    assert cp.returncode != 0
    sh(host, f"{ctr} images pull --hosts-dir /etc/containerd/certs.d {arts.pause_image}")
    assert arts.pause_image in sh(host, f"{ctr} images ls -q")
    # the sandbox process runs under runc with the default seccomp profile, and exits 0 on TERM
    out = sh(host, f"""
        {ctr} run --rm --seccomp {arts.pause_image} hkpause & p=$!
        for i in $(seq 100); do {ctr} task ls | grep -q 'hkpause.*RUNNING' && break; sleep 0.1; done
        {ctr} task ls
        {ctr} task kill -s SIGTERM hkpause
        wait $p; echo "exit=$?"
    """, timeout=120)  # fmt: skip
    assert "hkpause" in out and "RUNNING" in out
    assert out.strip().endswith("exit=0")


def test_images_run_their_programs(arts: LabArtifacts, containerd_host: str) -> None:
    host = containerd_host
    ctr = f"ctr -n {NS}"
    hosts = "--hosts-dir /etc/containerd/certs.d"

    def run(image: str, *cmd: str) -> str:
        """The program's stdout and stderr (ctr passes the container's through; ctr's own
        warnings, e.g. about cgroup v1, come first)."""
        sh(host, f"{ctr} images pull {hosts} {image} >/dev/null")
        return sh(host, f"{ctr} run --rm {image} hk-run-$$ {' '.join(cmd)} 2>&1", timeout=120)

    kp = arts.image(f"registry.k8s.io/kube-proxy:v{arts.kubernetes_version}")
    # kubeadm's manifests call commands by name: PATH finds them in /usr/local/bin
    assert run(kp, "kube-proxy", "--version").splitlines()[-1] == "Kubernetes v1.36.3"
    assert "nf_tables" in run(kp, "iptables", "--version")
    assert "conntrack" in run(kp, "conntrack", "--version")
    api = arts.image(f"registry.k8s.io/kube-apiserver:v{arts.kubernetes_version}")
    assert run(api, "kube-apiserver", "--version").splitlines()[-1] == "Kubernetes v1.36.3"
    assert "CoreDNS-1.14.2" in run(arts.coredns_image, "/coredns", "-version")
    assert "v0.28.10" in run(arts.flannel_image, "/opt/bin/flanneld", "--version")
    # flannel's init container: cp -f /flannel /opt/cni/bin/flannel
    out = run(arts.flannel_cni_plugin_image, "sh", "-c",
              "'mkdir -p /tmp/x && cp -f /flannel /tmp/x/flannel && CNI_COMMAND=VERSION /tmp/x/flannel'")  # fmt: skip
    assert '"1.0.0"' in out


# ---------------------------------------------------------------------------- release files


def test_release_tarballs_pass_their_sha256sums(arts: LabArtifacts) -> None:
    etcd = f"etcd/v{arts.etcd_version}"
    name = f"etcd-v{arts.etcd_version}-linux-amd64.tar.gz"
    out = sh("h1", f"""set -e
        d=$(mktemp -d); cd $d
        curl -fsSLO {arts.release_url(f'{etcd}/{name}')} && curl -fsSLO {arts.release_url(f'{etcd}/SHA256SUMS')}
        sha256sum -c SHA256SUMS
        sha256sum {name}
        tar -xzf {name}
        ./etcd-v{arts.etcd_version}-linux-amd64/etcd --version
        ./etcd-v{arts.etcd_version}-linux-amd64/etcdutl version
        cd / && rm -rf $d
    """)  # fmt: skip
    assert f"{name}: OK" in out
    assert f"{arts.etcd_sha256}  {name}" in out
    assert "etcd Version: 3.6.14" in out
    cni = f"cni-plugins/v{arts.cni_plugins_version}"
    tgz = f"cni-plugins-linux-amd64-v{arts.cni_plugins_version}.tgz"
    out = sh("h1", f"""set -e
        d=$(mktemp -d); cd $d
        curl -fsSLO {arts.release_url(f'{cni}/{tgz}')} && curl -fsSLO {arts.release_url(f'{cni}/SHA256SUMS')}
        sha256sum -c SHA256SUMS
        tar -xzf {tgz} && CNI_COMMAND=VERSION ./bridge </dev/null
        cd / && rm -rf $d
    """)  # fmt: skip
    assert f"{tgz}: OK" in out and '"1.0.0"' in out
    # the etcd-only tests' 3.5.1 tarball is still there
    assert sh("h1", f"curl -sSf -o /dev/null -w '%{{http_code}}' {arts.mirror_url}etcd/v3.5.1/SHA256SUMS") == "200"

"""What the lab builds from Go modules: one declarative table, one wrapper module per row.

Each row (a `GoRecipe`) names a committed wrapper module under `modules/<name>-<version>/`
(go.mod + go.sum, plus main.go where the lab writes the program itself), the packages one
`go build` compiles from it, and the flags. The recipe hash (see gobuild.py) covers all of it,
so changing a row or a module file rebuilds exactly that component.

A new Kubernetes patch (e.g. 1.35.4 for upgrade tests) is one more `kubernetes("1.35.4", ...)`
row plus `python -m homekube.lab.artifacts module kubernetes-1.35.4`, which writes its module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

MODULES_DIR = Path(__file__).parent / "modules"

#: The Go proxy does not tell the commit of most tags; a zero commit says "not known" honestly
#: (kubeadm and kubelet compare gitVersion only).
UNKNOWN_COMMIT = "0" * 40


@dataclass(frozen=True)
class GoRecipe:
    """One component: a wrapper module and the single `go build` that makes its binaries."""

    name: str
    version: str  # upstream version without the leading "v"
    #: import path -> version pinned with `go get -tool` when the module is (re)written
    tools: Mapping[str, str]
    #: binary `go build -o DIR/` writes -> the name it gets in the cache (renames only)
    renames: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: own main packages inside the wrapper module (relative, e.g. "."), written by hand
    own_packages: tuple[str, ...] = ()
    #: module -> version: `replace` lines (Kubernetes requires its staging modules at v0.0.0)
    replaces: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: module -> directory inside the wrapper module: stand-ins for modules the proxy refuses
    local_replaces: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: extra `require` upgrades when the pinned tree does not build with today's Go
    upgrades: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ldflags_x: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tags: tuple[str, ...] = ()
    cgo: bool = False
    #: Debian packages the build needs on this machine (cgo headers and static libraries)
    build_deps: tuple[str, ...] = ()
    timeout: float = 1800.0  # one cold build on 2 shared cores, with room
    #: wrapper module directory under modules/ when several versions share one hand-written
    #: program (only the version stamped in differs); default: `key`
    module: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def module_dir(self) -> Path:
        return MODULES_DIR / (self.module or self.key)

    @property
    def packages(self) -> tuple[str, ...]:
        """What `go build` is given, in a stable order."""
        own = ("." if p in (".", "") else f"./{p}" for p in self.own_packages)
        return (*sorted(self.tools), *own)

    @property
    def binaries(self) -> tuple[str, ...]:
        """File names of the binaries in the cache entry."""
        out = []
        for pkg in sorted(self.tools):
            base = _binary_name(pkg)
            out.append(self.renames.get(base, base))
        for p in self.own_packages:
            base = self.name if p in (".", "") else Path(p).name
            out.append(self.renames.get(base, base))
        return tuple(out)


def _binary_name(import_path: str) -> str:
    """The file name `go build -o DIR/` gives a main package (a /vN suffix is dropped)."""
    parts = import_path.split("/")
    last = parts[-1]
    if len(parts) > 1 and last.startswith("v") and last[1:].isdigit():
        return parts[-2]
    return last


def _frozen(d: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(d))


# ------------------------------------------------------------------------------ Kubernetes

KUBERNETES_COMMANDS = (
    "kubeadm",
    "kubelet",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
)

#: k8s.io/kubernetes requires these at v0.0.0 (they live in its staging/ tree); a wrapper
#: module must replace each with the published v0.<minor>.<patch>. An unused one is harmless.
#: k8s.io/sample-cli-plugin is left out: the proxy does not serve it and nothing imports it.
KUBERNETES_STAGING = (
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-controller",
    "streaming",
)


def kubernetes(version: str, build_date: str) -> GoRecipe:
    """Kubernetes' seven commands at `version` (e.g. "1.36.3"), version-stamped like a release.

    build_date is the tag's date from the module proxy: fixed, so rebuilds are identical.
    """
    major, minor, patch = version.split(".")
    stamp: dict[str, str] = {}
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamp |= {
            f"{pkg}.gitVersion": f"v{version}",
            f"{pkg}.gitMajor": major,
            f"{pkg}.gitMinor": minor,
            f"{pkg}.gitCommit": UNKNOWN_COMMIT,
            f"{pkg}.gitTreeState": "clean",
            f"{pkg}.buildDate": build_date,
        }
    return GoRecipe(
        name="kubernetes",
        version=version,
        tools=_frozen({f"k8s.io/kubernetes/cmd/{c}": f"v{version}" for c in KUBERNETES_COMMANDS}),
        replaces=_frozen({f"k8s.io/{m}": f"v0.{minor}.{patch}" for m in KUBERNETES_STAGING}),
        ldflags_x=_frozen(stamp),
        timeout=3600.0,
    )


# ----------------------------------------------------------------------------------- table

KUBERNETES = kubernetes("1.36.3", "2026-07-22T18:07:38Z")
#: The minor before, for minor-upgrade tests (the lab can bring a cluster up at either).
KUBERNETES_PREVIOUS = kubernetes("1.35.4", "2026-04-15T18:01:22Z")

ETCD = GoRecipe(
    name="etcd",
    version="3.6.14",
    # server/v3's root package is etcd's main (what upstream's build names `etcd`)
    tools=_frozen(
        {
            "go.etcd.io/etcd/server/v3": "v3.6.14",
            "go.etcd.io/etcd/etcdctl/v3": "v3.6.14",
            "go.etcd.io/etcd/etcdutl/v3": "v3.6.14",
        }
    ),
    renames=_frozen({"server": "etcd"}),
    # etcd's version is a constant in go.etcd.io/etcd/api/v3/version; nothing to stamp
)

CRI_TOOLS = GoRecipe(
    name="cri-tools",
    version="1.36.0",
    tools=_frozen({"sigs.k8s.io/cri-tools/cmd/crictl": "v1.36.0"}),
    ldflags_x=_frozen({"sigs.k8s.io/cri-tools/pkg/version.Version": "v1.36.0"}),
)

COREDNS = GoRecipe(
    name="coredns",
    version="1.14.2",
    tools=_frozen({"github.com/coredns/coredns": "v1.14.2"}),
    ldflags_x=_frozen({"github.com/coredns/coredns/coremain.GitCommit": "dd1df4f5"}),
)

# kubeadm 1.35's constants.CoreDNSVersion (a 1.35 cluster runs it until `upgrade apply`).
COREDNS_PREVIOUS = GoRecipe(
    name="coredns",
    version="1.13.1",
    tools=_frozen({"github.com/coredns/coredns": "v1.13.1"}),
    ldflags_x=_frozen({"github.com/coredns/coredns/coremain.GitCommit": "1db4568d"}),
)

# containerd 2.3 is the current LTS line (supported to 2028-04) and still supports cgroup v1,
# which the lab machine has. The tags are upstream's release tags (Makefile GO_BUILDTAGS).
CONTAINERD = GoRecipe(
    name="containerd",
    version="2.3.7",
    tools=_frozen(
        {
            "github.com/containerd/containerd/v2/cmd/containerd": "v2.3.7",
            "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2": "v2.3.7",
            "github.com/containerd/containerd/v2/cmd/ctr": "v2.3.7",
        }
    ),
    ldflags_x=_frozen(
        {
            "github.com/containerd/containerd/v2/version.Version": "v2.3.7",
            "github.com/containerd/containerd/v2/version.Package": (
                "github.com/containerd/containerd/v2"
            ),
        }
    ),
    tags=("urfave_cli_no_docs", "osusergo", "netgo", "static_build"),
)

# The runc containerd 2.3.7 pins (script/setup/runc-version). cgo for libseccomp, linked
# statically so the binary runs on any host; kubeadm's static pods ask for the RuntimeDefault
# seccomp profile, which needs the seccomp tag. Built without upstream's default `libpathrs`
# tag: libpathrs is a Rust library no registry here serves, and runc 1.5 still has its Go
# path-resolution fallback.
RUNC = GoRecipe(
    name="runc",
    version="1.5.2",
    tools=_frozen({"github.com/opencontainers/runc": "v1.5.2"}),
    tags=("seccomp", "urfave_cli_no_docs", "netgo", "osusergo"),
    cgo=True,
    build_deps=("gcc", "libc6-dev", "libseccomp-dev", "pkg-config"),
)

CNI_PLUGIN_NAMES = (
    "bridge",
    "host-local",
    "loopback",
    "portmap",
    "bandwidth",
    "firewall",
    "ptp",
    "tuning",
)
_CNI_PATHS = {
    "bridge": "main/bridge",
    "loopback": "main/loopback",
    "ptp": "main/ptp",
    "host-local": "ipam/host-local",
    "portmap": "meta/portmap",
    "bandwidth": "meta/bandwidth",
    "firewall": "meta/firewall",
    "tuning": "meta/tuning",
}
# 1.9.1 is what pkgs.k8s.io's v1.36 repository ships as kubernetes-cni (1.9.1-1.1).
CNI_PLUGINS = GoRecipe(
    name="cni-plugins",
    version="1.9.1",
    tools=_frozen(
        {
            f"github.com/containernetworking/plugins/plugins/{_CNI_PATHS[n]}": "v1.9.1"
            for n in CNI_PLUGIN_NAMES
        }
    ),
    ldflags_x=_frozen(
        {"github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion": "v1.9.1"}
    ),
)

# flannel's own CNI plugin repository (github.com/flannel-io/cni-plugin) is not served by the
# Go proxy. The same plugin lived in containernetworking/plugins as plugins/meta/flannel up to
# v0.9.1 (v1.0.x no longer has it); that is what the lab builds and ships under the image tag
# kube-flannel.yml expects. Its CNI library is raised from v0.8.1 to v1.1.2 (same API) so it
# accepts the "cniVersion": "1.0.0" of flannel v0.28's conflist, as the flannel-io build does.
FLANNEL_CNI_PLUGIN = GoRecipe(
    name="flannel-cni-plugin",
    version="0.9.1",
    tools=_frozen({"github.com/containernetworking/plugins/plugins/meta/flannel": "v0.9.1"}),
    upgrades=_frozen({"github.com/containernetworking/cni": "v1.1.2"}),
    ldflags_x=_frozen(
        {"github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion": "v0.9.1"}
    ),
)

# cgo, as upstream builds it on amd64: the UDP backend (compiled in on amd64 whatever the lab
# uses) is C. Linked statically like upstream's, so the image's libc does not matter.
FLANNEL = GoRecipe(
    name="flannel",
    version="0.28.10",
    tools=_frozen(
        {
            "github.com/flannel-io/flannel": "v0.28.10",
            "github.com/flannel-io/flannel/cmd/install_conf": "v0.28.10",
        }
    ),
    renames=_frozen({"flannel": "flanneld", "install_conf": "install-conf"}),
    # flanneld links every cloud backend; the Tencent VPC SDK module it pins is refused by the
    # Go proxy (403). A stand-in that compiles and fails at run time takes its place: the lab
    # uses the VXLAN backend only.
    local_replaces=_frozen(
        {"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc": "./tencentvpc-standin"}
    ),
    ldflags_x=_frozen({"github.com/flannel-io/flannel/pkg/version.Version": "v0.28.10"}),
    tags=("netgo", "osusergo"),
    cgo=True,
    build_deps=("gcc", "libc6-dev"),
)

# Our own pause program (modules/pause/main.go), tagged as the pause kubeadm 1.36 pins.
PAUSE = GoRecipe(
    name="pause",
    version="3.10.2",
    tools=_frozen({}),
    own_packages=(".",),
    ldflags_x=_frozen({"main.version": "3.10.2"}),
    module="pause",
)

# The same program tagged as kubeadm 1.35's constants.PauseVersion.
PAUSE_PREVIOUS = GoRecipe(
    name="pause",
    version="3.10.1",
    tools=_frozen({}),
    own_packages=(".",),
    ldflags_x=_frozen({"main.version": "3.10.1"}),
    module="pause",
)

# The lab's own test workload (modules/hkecho-1.0.0/main.go): an HTTP server that says which pod
# and node answered, and a client mode (`hkecho get URL [4|6]`) for connectivity checks from
# inside pods. One static binary, so the image needs no shell and no base layer.
HKECHO = GoRecipe(
    name="hkecho",
    version="1.0.0",
    tools=_frozen({}),
    own_packages=(".",),
)

RECIPES: tuple[GoRecipe, ...] = (
    KUBERNETES,
    KUBERNETES_PREVIOUS,
    ETCD,
    CRI_TOOLS,
    COREDNS,
    CONTAINERD,
    RUNC,
    CNI_PLUGINS,
    FLANNEL_CNI_PLUGIN,
    FLANNEL,
    HKECHO,
    PAUSE,
    COREDNS_PREVIOUS,
    PAUSE_PREVIOUS,
)


@dataclass(frozen=True)
class KubeRelease:
    """One Kubernetes minor the lab publishes: its signed apt repository (kubernetes/v1.X/deb)
    and the images kubeadm of that minor pulls. cri-tools and kubernetes-cni are the same
    builds for every minor (pkgs.k8s.io ships one per minor; kubelet only asks for
    kubernetes-cni >= 1.2.0 and crictl talks CRI v1 to any runtime)."""

    kubernetes: GoRecipe
    pause: GoRecipe  # kubeadm's constants.PauseVersion for this minor
    coredns: GoRecipe  # kubeadm's constants.CoreDNSVersion for this minor

    @property
    def minor(self) -> str:
        return ".".join(self.kubernetes.version.split(".")[:2])

    @property
    def recipes(self) -> tuple[GoRecipe, ...]:
        """This minor's own recipes; every other recipe serves all minors."""
        return (self.kubernetes, self.pause, self.coredns)

    @property
    def images(self) -> tuple[ImageSpec, ...]:
        """The images made from this minor's own recipes (the ones its kubeadm pulls)."""
        refs = {_ref(r) for r in self.recipes}
        return tuple(s for s in IMAGES if s.recipes & refs)


#: The lab's default first; `homekube lab up --kubernetes-version 1.35` picks another.
RELEASES: tuple[KubeRelease, ...] = (
    KubeRelease(KUBERNETES, PAUSE, COREDNS),
    KubeRelease(KUBERNETES_PREVIOUS, PAUSE_PREVIOUS, COREDNS_PREVIOUS),
)


def release(minor: str | None = None) -> KubeRelease:
    """The release of `minor` ("1.35", or a whole version "1.35.4"); None: the default."""
    if minor is None:
        return RELEASES[0]
    for r in RELEASES:
        if minor in (r.minor, r.kubernetes.version):
            return r
    known = ", ".join(r.kubernetes.version for r in RELEASES)
    raise KeyError(f"the lab builds no Kubernetes {minor} (it builds {known})")


def by_key(key: str) -> GoRecipe:
    for r in RECIPES:
        if r.key == key or r.name == key:
            return r
    known = ", ".join(r.key for r in RECIPES)
    raise KeyError(f"no recipe {key!r} (known: {known})")


# ---------------------------------------------------------------------------------- images

#: The flannel CNI plugin image tag flannel v0.28.10's kube-flannel.yml names.
FLANNEL_CNI_PLUGIN_TAG = "v1.9.1-flannel3"


@dataclass(frozen=True)
class ImageFile:
    """A binary from a recipe's cache entry, placed at `path` (no leading /) in an image."""

    path: str
    #: the recipe's name when it is the first recipe of that name in RECIPES (the lab's
    #: default version), else its key ("kubernetes-1.35.4")
    recipe: str
    binary: str


def _ref(recipe: GoRecipe) -> str:
    """How an ImageFile names `recipe` (see ImageFile.recipe)."""
    first = next(r for r in RECIPES if r.name == recipe.name)
    return recipe.name if first is recipe else recipe.key


@dataclass(frozen=True)
class ImageSpec:
    """An image of the lab registry and the upstream image it stands in for.

    `repository` is the path under the lab registry. kubeadm's images are named the way
    kubeadm names them for a custom imageRepository (`<repo>/coredns`, not
    `<repo>/coredns/coredns`); every other image keeps its upstream path minus the host.
    """

    repository: str
    tag: str
    upstream: str  # e.g. ghcr.io/flannel-io/flannel:v0.28.10
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...] = ()
    debian_base: bool = False  # on the Debian base layer (rootfs.py) instead of scratch
    kubeadm: bool = False  # one of the images `kubeadm config images list` names

    def ref(self, registry: str) -> str:
        return f"{registry}/{self.repository}:{self.tag}"

    @property
    def recipes(self) -> frozenset[str]:
        return frozenset(f.recipe for f in self.files)


def strip_registry(upstream: str) -> str:
    """`ghcr.io/flannel-io/flannel:v1` -> `flannel-io/flannel:v1` (a first component with a dot
    or a port, or `localhost`, is a registry host; Docker Hub's `library/` stays implicit)."""
    first, sep, rest = upstream.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return upstream


def lab_image(upstream: str, registry: str) -> str:
    """Where the lab registry serves the image that upstream publishes as `upstream`."""
    for spec in IMAGES:
        if spec.upstream == upstream:
            return spec.ref(registry)
    return f"{registry}/{strip_registry(upstream)}"


def _control_plane(command: str, k8s: GoRecipe = KUBERNETES) -> ImageSpec:
    tag = f"v{k8s.version}"
    return ImageSpec(
        repository=command,
        tag=tag,
        upstream=f"registry.k8s.io/{command}:{tag}",
        files=(ImageFile(f"usr/local/bin/{command}", _ref(k8s), command),),
        entrypoint=(f"/usr/local/bin/{command}",),
        # kube-proxy runs iptables/nft/conntrack; the others need nothing but their binary
        debian_base=command == "kube-proxy",
        kubeadm=True,
    )


_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


def _pause(recipe: GoRecipe) -> ImageSpec:
    return ImageSpec(
        repository="pause",
        tag=recipe.version,
        upstream=f"registry.k8s.io/pause:{recipe.version}",
        files=(ImageFile("pause", _ref(recipe), "pause"),),
        entrypoint=("/pause",),
        kubeadm=True,
    )


def _coredns(recipe: GoRecipe) -> ImageSpec:
    return ImageSpec(
        repository="coredns",
        tag=f"v{recipe.version}",
        upstream=f"registry.k8s.io/coredns/coredns:v{recipe.version}",
        files=(ImageFile("coredns", _ref(recipe), "coredns"),),
        entrypoint=("/coredns",),
        kubeadm=True,
    )


IMAGES: tuple[ImageSpec, ...] = (
    *(_control_plane(c) for c in _CONTROL_PLANE),
    _pause(PAUSE),
    _coredns(COREDNS),
    ImageSpec(
        repository="flannel-io/flannel",
        tag=f"v{FLANNEL.version}",
        upstream=f"ghcr.io/flannel-io/flannel:v{FLANNEL.version}",
        files=(
            ImageFile("opt/bin/flanneld", "flannel", "flanneld"),
            ImageFile("opt/bin/install-conf", "flannel", "install-conf"),
        ),
        entrypoint=("/opt/bin/flanneld",),
        debian_base=True,
    ),
    ImageSpec(
        repository="flannel-io/flannel-cni-plugin",
        tag=FLANNEL_CNI_PLUGIN_TAG,
        upstream=f"ghcr.io/flannel-io/flannel-cni-plugin:{FLANNEL_CNI_PLUGIN_TAG}",
        # the init container runs `cp -f /flannel /opt/cni/bin/flannel`: cp comes from the base
        files=(ImageFile("flannel", "flannel-cni-plugin", "flannel"),),
        debian_base=True,
    ),
    ImageSpec(
        repository="homekube/hkecho",
        tag=HKECHO.version,
        upstream=f"localhost/homekube/hkecho:{HKECHO.version}",
        files=(ImageFile("hkecho", "hkecho", "hkecho"),),
        entrypoint=("/hkecho",),
    ),
    # the previous minor's kubeadm images, for clusters brought up there to upgrade from
    *(_control_plane(c, KUBERNETES_PREVIOUS) for c in _CONTROL_PLANE),
    _pause(PAUSE_PREVIOUS),
    _coredns(COREDNS_PREVIOUS),
)

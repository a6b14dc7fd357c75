"""Build, pack and publish the lab's Kubernetes artifacts; describe them for a lab cluster.yaml.

    build    each recipe's binaries (gobuild.py), cached by recipe hash
    pack     release tarballs, .debs and OCI images, cached in <artifacts>/{dist,oci}
    publish  into this slot's lab: files linked into the mirror (upstream layout), the signed
             apt repository written at kubernetes/v1.X/deb/, images pushed to the registry

Only `publish` needs the lab (its bridge carries the registry); build and pack run anywhere
as root. Everything is skipped when its inputs did not change, so a second run costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from homekube.lab import aptrepo, debrepo, network, services, settings, system
from homekube.lab.artifacts import debs, gobuild, oci, rootfs, tarballs
from homekube.lab.artifacts.gobuild import Built, Progress
from homekube.lab.artifacts.recipes import (
    CNI_PLUGIN_NAMES,
    CNI_PLUGINS,
    CONTAINERD,
    CRI_TOOLS,
    ETCD,
    FLANNEL,
    IMAGES,
    RECIPES,
    RELEASES,
    RUNC,
    GoRecipe,
    ImageSpec,
    KubeRelease,
    release,
)
from homekube.lab.artifacts.registry import Registry
from homekube.lab.settings import ArtifactPaths, LabPaths
from homekube.lab.system import LabError, exclusive_lock, log

#: Bump when packing changes in a way the inputs below do not show.
PACK_FORMAT = 1
@dataclass(frozen=True)
class LabArtifacts:
    """What a lab cluster.yaml (and a test) needs to know about the artifacts.

    URLs are as lab hosts see them. Image references are pullable from the lab registry over
    plain HTTP; `image_repository` is what kubeadm's `imageRepository` takes.
    """

    kubernetes_version: str  # 1.36.3
    kubernetes_minor: str  # 1.36
    etcd_version: str
    etcd_sha256: str
    containerd_version: str
    containerd_sha256: str
    runc_version: str
    runc_sha256: str
    cni_plugins_version: str
    cni_plugins_sha256: str
    cri_tools_version: str
    coredns_version: str
    pause_version: str
    flannel_version: str
    registry: str  # host:port of the lab registry (plain HTTP)
    image_repository: str  # kubeadm imageRepository
    images: Mapping[str, str]  # upstream reference -> lab reference
    mirror_url: str
    apt_repo_url: str  # deb [signed-by=...] <apt_repo_url> /
    apt_key_url: str  # Release.key (armored), as pkgs.k8s.io serves it
    deb_versions: Mapping[str, str]  # package -> Debian version
    published: bool  # mirror files and apt repository in this lab's mirror, images pushed
    #: the lab-built kubectl, for the operator machine (tests use it as a user would)
    kubectl: Path | None = None
    #: Calico's and the operator's CRDs from the operator's Go module (None: not fetched)
    calico_crds: Path | None = None
    #: step -> seconds it took in the run that made this (0: cached)
    seconds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def image(self, upstream: str) -> str:
        try:
            return self.images[upstream]
        except KeyError:
            raise LabError(f"the lab registry has no stand-in for {upstream}") from None

    @property
    def pause_image(self) -> str:
        return self.image(f"registry.k8s.io/pause:{self.pause_version}")

    @property
    def coredns_image(self) -> str:
        return self.image(f"registry.k8s.io/coredns/coredns:v{self.coredns_version}")

    @property
    def flannel_image(self) -> str:
        return self.image(f"ghcr.io/flannel-io/flannel:v{self.flannel_version}")

    @property
    def flannel_cni_plugin_image(self) -> str:
        spec = next(s for s in IMAGES if s.repository == "flannel-io/flannel-cni-plugin")
        return self.image(spec.upstream)

    @property
    def hkecho_image(self) -> str:
        """The lab's test workload (HTTP server + `hkecho get URL` client), no shell inside."""
        spec = next(s for s in IMAGES if s.repository == "homekube/hkecho")
        return self.image(spec.upstream)

    def release_url(self, rel_path: str) -> str:
        return f"{self.mirror_url}{rel_path}"


@dataclass
class Report:
    """What one run did: step -> seconds (0 when cached), and notes for the user."""

    steps: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    built: dict[str, Built] = field(default_factory=dict)


# ---------------------------------------------------------------------------- selection


def component_names() -> tuple[str, ...]:
    return tuple(r.name for r in RECIPES)


def releases(minors: Collection[str] | None) -> tuple[KubeRelease, ...]:
    """The Kubernetes releases named by minor ("1.35") or version; None: every one."""
    if minors is None:
        return RELEASES
    try:
        picked = {id(release(m)) for m in minors}
    except KeyError as e:
        raise LabError(str(e.args[0])) from None
    return tuple(r for r in RELEASES if id(r) in picked)


def minors_for(minor: str | None) -> tuple[str, ...]:
    """What a lab cluster at `minor` needs: that release, and the default one it upgrades to."""
    (rel,) = releases([RELEASES[0].minor if minor is None else minor])
    return tuple(dict.fromkeys((RELEASES[0].minor, rel.minor)))


def _selected(
    only: Collection[str] | None, minors: Collection[str] | None = None
) -> tuple[GoRecipe, ...]:
    """The recipes to build: `only` those names (None: all), of the releases in `minors`
    (None: every release; else the release-independent recipes plus those releases' own
    Kubernetes, pause and CoreDNS)."""
    picked = releases(minors)
    own = {id(r) for rel in RELEASES for r in rel.recipes}
    wanted = {id(r) for rel in picked for r in rel.recipes}
    recipes = tuple(r for r in RECIPES if id(r) not in own or id(r) in wanted)
    if not only:
        return recipes
    unknown = sorted(set(only) - set(component_names()))
    if unknown:
        raise LabError(
            f"unknown component(s): {', '.join(unknown)}",
            hint=f"choose from: {', '.join(component_names())}",
        )
    return tuple(r for r in recipes if r.name in only)


# ------------------------------------------------------------------------------- stamps


def _inputs_hash(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _read_stamp(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(path: Path, data: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _dist(paths: ArtifactPaths) -> Path:
    return paths.root / "dist"


def _store(paths: ArtifactPaths) -> oci.BlobStore:
    return oci.BlobStore(paths.root / "oci")


# ------------------------------------------------------------------------------ packing

_RELEASES: dict[str, Callable[[Built, Path], tarballs.ReleaseFile]] = {
    "etcd": lambda b, out: tarballs.etcd_release(b.dir, ETCD.version, out),
    "containerd": lambda b, out: tarballs.containerd_release(b.dir, CONTAINERD.version, out),
    "runc": lambda b, out: tarballs.runc_release(b.dir, RUNC.version, out),
    "cni-plugins": lambda b, out: tarballs.cni_release(
        b.dir, CNI_PLUGIN_NAMES, CNI_PLUGINS.version, out
    ),
}


def _release_stamp(paths: ArtifactPaths, name: str) -> Path:
    return _dist(paths) / ".stamps" / f"{name}.json"


def _pack_release(name: str, built: Built, paths: ArtifactPaths, progress: Progress) -> float:
    stamp = _release_stamp(paths, name)
    inputs = {"format": PACK_FORMAT, "entry": built.dir.name}
    old = _read_stamp(stamp)
    if old and old.get("inputs") == inputs:
        rel = str(old.get("file", ""))
        if (_dist(paths) / rel).is_file():
            return 0.0
    t0 = time.monotonic()
    rf = _RELEASES[name](built, _dist(paths))
    _write_stamp(stamp, {"inputs": inputs, "file": rf.rel_path, "sha256": rf.sha256})
    seconds = time.monotonic() - t0
    progress(f"packed {rf.rel_path} in {seconds:.0f} s")
    return seconds


def release_file(name: str, paths: ArtifactPaths | None = None) -> tarballs.ReleaseFile | None:
    data = _read_stamp(_release_stamp(paths or ArtifactPaths.from_env(), name))
    if not data:
        return None
    return tarballs.ReleaseFile(str(data["file"]), str(data["sha256"]))


def _debs_dir(paths: ArtifactPaths, rel: KubeRelease = RELEASES[0]) -> Path:
    return _dist(paths) / "debs" / f"kubernetes-v{rel.kubernetes.version}"


def _suffix(rel: KubeRelease) -> str:
    """Stamp-name suffix: none for the default release (its stamps predate the others)."""
    return "" if rel is RELEASES[0] else f"-v{rel.minor}"


def _built_key(recipe: GoRecipe) -> str:
    """Under which key `run` records a recipe's Built: the name for the first of that name."""
    first = next(r for r in RECIPES if r.name == recipe.name)
    return recipe.name if first is recipe else recipe.key


def _pack_debs(
    rel: KubeRelease, built: Mapping[str, Built], paths: ArtifactPaths, progress: Progress
) -> float:
    stamp = _dist(paths) / ".stamps" / f"debs{_suffix(rel)}.json"
    code = hashlib.sha256(Path(debs.__file__).read_bytes()).hexdigest()[:16]
    k8s = built[_built_key(rel.kubernetes)]
    inputs = {
        "format": PACK_FORMAT,
        "code": code,
        "entries": sorted(
            [k8s.dir.name, *(built[n].dir.name for n in ("cri-tools", "cni-plugins"))]
        ),
    }
    out = _debs_dir(paths, rel)
    specs = debs.kubernetes_debs(
        k8s.dir, rel.kubernetes.version, built["cri-tools"].dir, CRI_TOOLS.version,
        built["cni-plugins"].dir, CNI_PLUGIN_NAMES, CNI_PLUGINS.version,
    )  # fmt: skip
    old = _read_stamp(stamp)
    if old and old.get("inputs") == inputs and all((out / s.filename).is_file() for s in specs):
        return 0.0
    t0 = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    for spec in specs:
        progress(f"packing {spec.filename}")
        debs.build_deb(spec, out)
    _write_stamp(stamp, {"inputs": inputs, "debs": [s.filename for s in specs]})
    return time.monotonic() - t0


def _image_record_path(store: oci.BlobStore, spec: ImageSpec, key: str) -> Path:
    return store.root / "images" / f"{spec.repository.replace('/', '_')}-{spec.tag}-{key}.json"


def _pack_image(
    spec: ImageSpec, built: Mapping[str, Built], base: oci.Blob | None, store: oci.BlobStore
) -> tuple[oci.ImageRecord, bool]:
    """The image's record, writing its layer, config and manifest first when missing."""
    inputs = {
        "format": PACK_FORMAT,
        "spec": repr(spec),
        "entries": sorted(built[r].dir.name for r in spec.recipes),
        "base": base.digest if base else None,
    }
    rec_path = _image_record_path(store, spec, _inputs_hash(inputs))
    try:
        rec = oci.ImageRecord.from_json(rec_path.read_text())
        manifest = oci.Blob(rec.manifest_digest, store.path(rec.manifest_digest).stat().st_size,
                            oci.MANIFEST_TYPE)  # fmt: skip
        if all(store.has(b) for b in (*rec.layers, rec.config, manifest)):
            return rec, False
    except (OSError, ValueError, KeyError):
        pass
    files = [
        oci.LayerFile(f.path, built[f.recipe].binary(f.binary), 0o755) for f in spec.files
    ]
    dirs = () if spec.debian_base else (("tmp", 0o1777),)  # scratch images get a /tmp
    layer = store.add_layer(lambda tar: oci.add_files(tar, files, dirs))
    layers = (base, layer) if base else (layer,)
    history = (["debootstrap --variant=minbase (homekube lab base)"] if base else []) + [
        f"homekube lab: {', '.join('/' + f.path for f in spec.files)}"
    ]
    image = store.add_image(
        layers,
        oci.ImageConfig(entrypoint=spec.entrypoint),
        history=history,
        annotations={
            "org.opencontainers.image.version": spec.tag,
            "org.opencontainers.image.description": f"homekube lab stand-in for {spec.upstream}",
        },
    )
    rec = oci.ImageRecord(image.manifest_digest, image.config, image.layers)
    rec_path.parent.mkdir(parents=True, exist_ok=True)
    rec_path.write_text(rec.to_json() + "\n")
    return rec, True


def _pack_images(
    specs: tuple[ImageSpec, ...], built: Mapping[str, Built], paths: ArtifactPaths,
    progress: Progress,
) -> dict[ImageSpec, oci.ImageRecord]:  # fmt: skip
    store = _store(paths)
    base = None
    if any(s.debian_base for s in specs):
        base = rootfs.ensure_base_layer(store, paths.root / "work", progress)
    out = {}
    for spec in specs:
        t0 = time.monotonic()
        rec, new = _pack_image(spec, built, base if spec.debian_base else None, store)
        if new:
            progress(f"image {spec.repository}:{spec.tag} written in {time.monotonic() - t0:.0f} s")
        out[spec] = rec
    return out


# ----------------------------------------------------------------------------- publishing


def _link_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system
        shutil.copyfile(src, tmp)
    tmp.replace(dest)


def _publish_release(name: str, paths: ArtifactPaths, lab: LabPaths) -> None:
    rf = release_file(name, paths)
    if rf is None:
        return
    src_dir = (_dist(paths) / rf.rel_path).parent
    dest_dir = lab.mirror / Path(rf.rel_path).parent
    for f in sorted(src_dir.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            _link_file(f, dest_dir / f.name)


def apt_repo_dir(lab: LabPaths, rel: KubeRelease = RELEASES[0]) -> Path:
    return lab.mirror / "kubernetes" / f"v{rel.minor}" / "deb"


def _publish_apt_repo(
    rel: KubeRelease, paths: ArtifactPaths, lab: LabPaths, progress: Progress
) -> None:
    src = _debs_dir(paths, rel)
    files = sorted(src.glob("*.deb")) if src.is_dir() else []
    if not files:
        return
    dest = apt_repo_dir(lab, rel)
    stamp = lab.run / f"published-apt{_suffix(rel)}.json"
    signing = aptrepo.SigningKey.ensure(debrepo.cache_dir(lab) / "gnupg")
    inputs = {
        "debs": [f"{f.name}:{f.stat().st_size}:{f.stat().st_ino}" for f in files],
        "key": signing.fingerprint,
    }
    old = _read_stamp(stamp)
    if old and old.get("inputs") == inputs and (dest / "InRelease").is_file():
        return
    aptrepo.write_flat_repo(files, dest, signing)
    _write_stamp(stamp, {"inputs": inputs})
    progress(f"apt repository written: {dest.relative_to(lab.mirror)}/ ({len(files)} packages)")


def _push_images(
    records: Mapping[ImageSpec, oci.ImageRecord], paths: ArtifactPaths, lab: LabPaths,
    progress: Progress,
) -> None:  # fmt: skip
    services.registry_up(lab)
    reg = Registry(settings.REGISTRY_HOST)
    reg.wait()
    store = _store(paths)
    pushed_base: str | None = None
    for spec, rec in records.items():
        mount = pushed_base if spec.debian_base else None
        res = reg.push(store, rec, spec.repository, spec.tag, mount_from=mount)
        if spec.debian_base and pushed_base is None:
            pushed_base = spec.repository
        if res.uploaded:
            progress(f"pushed {res.ref} ({res.bytes_sent / 2**20:.0f} MiB)")


#: The Tigera operator release that Calico v3.32.1 ships (facts.md §0). Its Go module carries
#: the CRDs of upstream's `operator-crds.yaml` as separate files; the release manifests
#: themselves (raw.githubusercontent.com) cannot be reached from here.
TIGERA_OPERATOR_MODULE = "github.com/tigera/operator"
TIGERA_OPERATOR_VERSION = "v1.42.3"
_CALICO_CRD_DIRS = ("pkg/imports/crds/operator", "pkg/imports/crds/calico/v1.crd.projectcalico.org")


def calico_crds_path(paths: ArtifactPaths | None = None) -> Path:
    p = paths or ArtifactPaths.from_env()
    return _dist(p) / "calico" / f"operator-crds-{TIGERA_OPERATOR_VERSION}.yaml"


def _calico_crds(paths: ArtifactPaths, progress: Progress) -> float:
    """Bundle Calico's and the operator's CRDs from the operator's Go module (one YAML stream).

    Used only to show that the real API server accepts them and homekube's Installation: the
    lab cannot run Calico's pods, so it never installs Calico itself.
    """
    dest = calico_crds_path(paths)
    if dest.is_file():
        return 0.0
    t0 = time.monotonic()
    ref = f"{TIGERA_OPERATOR_MODULE}@{TIGERA_OPERATOR_VERSION}"
    progress(f"fetching {ref} (Calico's CRDs) from the Go module proxy")
    cp = system.run(["go", "mod", "download", "-json", ref], env=gobuild.go_env(paths), timeout=600,
             check=False)
    try:
        src = Path(json.loads(cp.stdout)["Dir"])
    except (ValueError, KeyError, TypeError):
        raise LabError(f"cannot download {ref}: {(cp.stdout + cp.stderr).strip()[-500:]}") from None
    files = sorted(f for d in _CALICO_CRD_DIRS for f in (src / d).glob("*.yaml"))
    if not files:
        raise LabError(f"{ref} has no CRDs under {', '.join(_CALICO_CRD_DIRS)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tmp.open("w") as out:
        for f in files:
            out.write(f"---\n# {ref}/{f.relative_to(src)}\n")
            out.write(f.read_text().removeprefix("---\n"))
    tmp.replace(dest)
    progress(f"Calico CRDs: {len(files)} from {ref} in {dest}")
    return time.monotonic() - t0


def lab_is_up(lab: LabPaths) -> bool:
    """The bridge exists and this lab directory owns it (the registry binds its address)."""
    try:
        owner = Path(settings.OWNER_FILE.read_text().strip())
    except OSError:
        return False
    return owner == lab.root and network.link_exists(settings.BRIDGE)


# ---------------------------------------------------------------------------------- run


def run(
    progress: Progress,
    *,
    only: Collection[str] | None = None,
    minors: Collection[str] | None = None,
    force: bool = False,
    publish: bool = True,
) -> Report:
    """Build what is missing (or everything with force), pack it and publish it to the lab.

    minors limits the Kubernetes releases to those minors (None: every one the lab builds);
    the other components are built either way. A recipe another process is building is
    waited for (gobuild's lock), then taken from the cache.
    """
    paths = ArtifactPaths.from_env()
    report = Report()
    selected = _selected(only, minors)
    for recipe in selected:
        b = gobuild.ensure_built(recipe, progress, force=force, paths=paths)
        report.built[_built_key(recipe)] = b
        report.steps[f"build {recipe.key}"] = b.seconds or 0.0
    built = report.built
    with exclusive_lock(paths.root / ".pack.lock", timeout=3600):
        for name in _RELEASES:
            if name in built:
                report.steps[f"pack {name}"] = _pack_release(name, built[name], paths, progress)
        for rel in _releases_built(built):
            report.steps[f"pack debs {rel.minor}"] = _pack_debs(rel, built, paths, progress)
        specs = tuple(s for s in IMAGES if s.recipes <= built.keys())
        t0 = time.monotonic()
        records = _pack_images(specs, built, paths, progress) if specs else {}
        report.steps["pack images"] = time.monotonic() - t0
        if not only:
            report.steps["calico CRDs"] = _calico_crds(paths, progress)
    if not publish:
        return report
    lab = LabPaths.from_env()
    t0 = time.monotonic()
    # The lab's own 3.5.1 tarball stays (the etcd-only tests use it); these go beside it.
    for name in _RELEASES:
        if name in built:
            _publish_release(name, paths, lab)
    for rel in _releases_built(built):
        _publish_apt_repo(rel, paths, lab, progress)
    report.steps["publish mirror"] = time.monotonic() - t0
    if records:
        if lab_is_up(lab):
            t0 = time.monotonic()
            _push_images(records, paths, lab, progress)
            report.steps["push images"] = time.monotonic() - t0
        else:
            report.notes.append(
                "images not pushed: the lab is down (`homekube lab up N --kubernetes` pushes them)"
            )
    return report


def _releases_built(built: Mapping[str, Built]) -> list[KubeRelease]:
    """The Kubernetes minors whose packages can be made from `built`."""
    return [r for r in RELEASES
            if {_built_key(r.kubernetes), "cri-tools", "cni-plugins"} <= built.keys()]


def describe(
    *, published: bool, seconds: Mapping[str, float] | None = None, minor: str | None = None
) -> LabArtifacts:
    """The artifacts as a lab cluster.yaml sees them (after `run` built and packed them).

    minor picks the Kubernetes release ("1.35"; see recipes.RELEASES); None: the default.
    """
    try:
        rel = release(minor)
    except KeyError as e:
        raise LabError(str(e.args[0])) from None
    paths = ArtifactPaths.from_env()
    shas = {}
    for name in _RELEASES:
        rf = release_file(name, paths)
        if rf is None:
            raise LabError(f"the {name} release is not packed yet", hint="run `homekube lab artifacts`")
        shas[name] = rf.sha256
    k8s = rel.kubernetes
    mirror = settings.MIRROR_URL
    repo_url = f"{mirror}kubernetes/v{rel.minor}/deb/"
    return LabArtifacts(
        kubernetes_version=k8s.version,
        kubernetes_minor=rel.minor,
        etcd_version=ETCD.version,
        etcd_sha256=shas["etcd"],
        containerd_version=CONTAINERD.version,
        containerd_sha256=shas["containerd"],
        runc_version=RUNC.version,
        runc_sha256=shas["runc"],
        cni_plugins_version=CNI_PLUGINS.version,
        cni_plugins_sha256=shas["cni-plugins"],
        cri_tools_version=CRI_TOOLS.version,
        coredns_version=rel.coredns.version,
        pause_version=rel.pause.version,
        flannel_version=FLANNEL.version,
        registry=settings.REGISTRY_HOST,
        image_repository=settings.REGISTRY_HOST,
        images=MappingProxyType({s.upstream: s.ref(settings.REGISTRY_HOST) for s in IMAGES}),
        mirror_url=mirror,
        apt_repo_url=repo_url,
        apt_key_url=f"{repo_url}Release.key",
        deb_versions=MappingProxyType(
            {
                "kubeadm": f"{k8s.version}-{debs.REVISION}",
                "kubelet": f"{k8s.version}-{debs.REVISION}",
                "kubectl": f"{k8s.version}-{debs.REVISION}",
                "cri-tools": f"{CRI_TOOLS.version}-{debs.REVISION}",
                "kubernetes-cni": f"{CNI_PLUGINS.version}-{debs.REVISION}",
            }
        ),
        published=published,
        kubectl=(entry / "kubectl") if (entry := gobuild.entry_dir(k8s, paths)).is_dir()
        and (entry / "kubectl").is_file() else None,
        calico_crds=calico_crds_path(paths) if calico_crds_path(paths).is_file() else None,
        seconds=MappingProxyType(dict(seconds or {})),
    )


def ensure(
    progress: Progress | None = None, *, force: bool = False, minor: str | None = None
) -> LabArtifacts:
    """Build, pack and publish what a cluster at `minor` needs (what is missing); describe it.

    minor None is the default release; another minor also gets the default one (what it
    upgrades to). Publishing into the lab needs the lab up (`homekube lab up`); without it
    the artifacts are built and packed, and `published` is False.
    """
    say = progress or (lambda line: log.info("%s", line))
    report = run(say, force=force, minors=minors_for(minor))
    return describe(published=not report.notes, seconds=report.steps, minor=minor)


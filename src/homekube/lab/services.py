"""Daemons the lab runs on the bridge address: the mirror (artifacts, Debian repository) and
the OCI registry.

Both are started detached (own session) so they outlive a CLI `up`, recorded by PID + start
time, and recognised by a command line that names this lab's directory, so `down` never
touches a daemon someone else started.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from pathlib import Path

from homekube.lab import settings
from homekube.lab.settings import LabPaths
from homekube.lab.system import (
    CmdlineMatch,
    LabError,
    ensure_packages,
    find_processes,
    live_pid,
    log,
    spawn_detached,
    terminate,
    write_pid_record,
)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(pid_file: Path, match: CmdlineMatch, port: int, log_path: Path) -> None:
    start = time.monotonic()
    deadline = start + 10
    while time.monotonic() < deadline:
        if _listening(settings.GATEWAY4, port):
            return
        # right after the spawn the child may not have exec'd yet, so its command line does
        # not match for a moment: only a process that stays unrecognisable has died
        if time.monotonic() - start > 2 and live_pid(pid_file, match) is None:
            break  # died: usually the port is taken
        time.sleep(0.05)
    tail = ""
    if log_path.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    raise LabError(
        f"nothing listens on {settings.GATEWAY4}:{port} (started by the lab; log {log_path})"
        + (f":\n{tail}" if tail else ""),
        hint=f"is port {port} on {settings.GATEWAY4} held by something else?",
    )


def _stop(pid_file: Path, match: CmdlineMatch, what: str) -> None:
    pid = live_pid(pid_file, match)
    pids = {pid} if pid else set()
    # a crashed run may have lost its PID file; the command line names our directory
    pids.update(find_processes(match))
    for p in sorted(pids):
        log.info("stopping %s (pid %d)", what, p)
        terminate(p, match, grace=10, what=what)
    pid_file.unlink(missing_ok=True)


# ------------------------------------------------------------------------ legacy apt proxy


def legacy_proxy_down(paths: LabPaths) -> None:
    """Stop and remove the apt-cacher-ng a lab from before its Debian repository started.

    Labs now serve a signed repository from the mirror (debrepo.py, issue 10); a lab dir used
    by an older homekube may still run its proxy, recognised by the conf dir it names.
    """
    conf = str(paths.root / "acng-conf")

    def match(argv: list[str]) -> bool:
        return Path(argv[0]).name == "apt-cacher-ng" and conf in argv

    _stop(paths.run / "apt-cacher-ng.pid", match, "apt-cacher-ng (left by an older lab)")
    for old in ("acng-conf", "apt-cache"):
        shutil.rmtree(paths.root / old, ignore_errors=True)


# ----------------------------------------------------------------------------- mirror server


def _mirror_match(paths: LabPaths) -> CmdlineMatch:
    mirror = str(paths.mirror)
    return lambda argv: "http.server" in argv and mirror in argv


def _mirror_pid_file(paths: LabPaths) -> Path:
    return paths.run / "mirror.pid"


def mirror_running(paths: LabPaths) -> bool:
    return live_pid(_mirror_pid_file(paths), _mirror_match(paths)) is not None


def mirror_up(paths: LabPaths) -> None:
    """Serve paths.mirror over HTTP on the bridge (stdlib server: no dependency, no config)."""
    if mirror_running(paths):
        return
    _stop(_mirror_pid_file(paths), _mirror_match(paths), "mirror server")
    out = paths.run / "mirror.log"
    argv = [
        sys.executable, "-m", "http.server", str(settings.MIRROR_PORT),
        "--bind", settings.GATEWAY4, "--directory", str(paths.mirror),
    ]  # fmt: skip
    pid = spawn_detached(argv, out)
    write_pid_record(_mirror_pid_file(paths), pid)
    _wait_listening(_mirror_pid_file(paths), _mirror_match(paths), settings.MIRROR_PORT, out)


def mirror_down(paths: LabPaths) -> None:
    _stop(_mirror_pid_file(paths), _mirror_match(paths), "mirror server")


# ---------------------------------------------------------------------------- OCI registry

REGISTRY_BINARY = "/usr/bin/docker-registry"


def _registry_config_path(paths: LabPaths) -> Path:
    return paths.run / "registry.yml"


def _registry_match(paths: LabPaths) -> CmdlineMatch:
    conf = str(_registry_config_path(paths))
    return lambda argv: Path(argv[0]).name == "docker-registry" and conf in argv


def _registry_pid_file(paths: LabPaths) -> Path:
    return paths.run / "registry.pid"


def registry_running(paths: LabPaths) -> bool:
    return live_pid(_registry_pid_file(paths), _registry_match(paths)) is not None


def registry_config(paths: LabPaths) -> dict[str, object]:
    """docker-registry's configuration: plain HTTP on the bridge, storage in the lab dir."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(paths.registry)},
            "delete": {"enabled": True},
        },
        # no TLS and no auth: hosts reach it only over the lab bridge (see network.py)
        "http": {"addr": settings.REGISTRY_HOST, "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def registry_up(paths: LabPaths) -> None:
    """Debian's docker-registry (the CNCF Distribution registry) on the bridge."""
    if registry_running(paths):
        return
    ensure_packages(("docker-registry",), "the lab registry")
    _stop(_registry_pid_file(paths), _registry_match(paths), "registry")
    paths.registry.mkdir(parents=True, exist_ok=True)
    conf = _registry_config_path(paths)
    conf.parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no hand-written YAML, and the registry reads it as its config.yml
    conf.write_text(json.dumps(registry_config(paths), indent=1) + "\n")
    out = paths.run / "registry.log"
    # a clean environment: the registry reads REGISTRY_* variables as config overrides
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    pid = spawn_detached([REGISTRY_BINARY, "serve", str(conf)], out, env=env)
    write_pid_record(_registry_pid_file(paths), pid)
    _wait_listening(_registry_pid_file(paths), _registry_match(paths), settings.REGISTRY_PORT, out)


def registry_down(paths: LabPaths) -> None:
    _stop(_registry_pid_file(paths), _registry_match(paths), "registry")

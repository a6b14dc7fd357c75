"""What the modules that drive kubeadm share (pure): kubeadm's file paths, the admin
kubectl, and the way kubeadm runs (its output in a root-only log, the tail shown redacted on
failure).

It sits below components.kubernetes, components.endpoint and components.cp_config, which
import each other in that order, so none of them has to keep its own copy.
"""

from __future__ import annotations

__all__ = ["ADMIN_CONF", "APISERVER_MANIFEST", "KUBECTL", "KUBELET_CONF", "LOG_DIR", "REDACT",
           "SUPER_ADMIN_CONF", "kubeadm_script"]

LOG_DIR = "/var/log/homekube"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
SUPER_ADMIN_CONF = "/etc/kubernetes/super-admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
KUBECTL = f"kubectl --kubeconfig={ADMIN_CONF}"

#: hide bootstrap tokens and 64-hex keys/hashes in kubeadm output shown after a failure
REDACT = r"sed -E 's/[a-z0-9]{6}\.[a-z0-9]{16}/<token>/g; s/[0-9a-f]{64}/<redacted>/g'"


def kubeadm_script(what: str, cmd: str, log: str) -> str:
    """Run kubeadm with its output in a root-only log; on failure show its tail, redacted."""
    return (
        f"install -d -m 0700 {LOG_DIR}\n"
        f"if ! {cmd} >{log} 2>&1; then\n"
        f'  echo "{what} failed; last lines of {log} (secrets redacted):" >&2\n'
        f"  tail -n 25 {log} | {REDACT} >&2\n"
        "  exit 1\n"
        "fi"
    )

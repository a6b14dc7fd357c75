# shellcheck shell=bash
# Functions that take homekube's footprint off a host (see homekube/components/reset.py,
# which calls them with the paths, units and records it knows about).

# hk_rm PATH...: remove each path; a path that is its own mount (a data disk on
# /var/lib/containerd or the etcd data dir) cannot be removed: empty it and leave the mount
# to the user's fstab.
hk_rm() {
  local p
  for p in "$@"; do
    if mountpoint -q "$p" 2>/dev/null; then
      find "$p" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    else
      rm -rf "$p"
    fi
  done
}

# hk_rm_aside DATA_DIR: the copies etcd's data was set aside as (a removed member's
# DATA_DIR.removed-*, a restore's DATA_DIR.before-restore-*)
hk_rm_aside() {
  local p
  for p in "$1".removed-* "$1".before-restore-*; do
    if [ -e "$p" ]; then hk_rm "$p"; fi
  done
}

# hk_rmdir_empty DIR...: remove each directory if it is empty (innermost first); a directory
# something else also uses keeps its content and stays
hk_rmdir_empty() {
  local d
  for d in "$@"; do
    rmdir "$d" 2>/dev/null || true
  done
}

# hk_iptables_cleanup: delete the chains Kubernetes, Calico and flannel made in every table,
# and the rules that jump to them; other rules stay.
hk_iptables_cleanup() {
  local t c r
  local -a rule
  for t in filter nat mangle raw; do
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|cali-|FLANNEL-)/{print $2}'); do
      iptables -t "$t" -F "$c" 2>/dev/null || true
    done
    # each jump rule, printed as -A ..., deleted as -D ... (its words as iptables-save wrote them)
    { iptables -t "$t" -S 2>/dev/null | grep -E -- '-j (KUBE-|cali-|FLANNEL-)' | sed 's/^-A/-D/' |
      while read -r r; do
        eval "rule=($r)"
        iptables -t "$t" "${rule[@]}" 2>/dev/null || true
      done; } || true
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|cali-|FLANNEL-)/{print $2}'); do
      iptables -t "$t" -X "$c" 2>/dev/null || true
    done
  done
}

# hk_links_cleanup: the pod network's tunnel and bridge devices
hk_links_cleanup() {
  local l
  for l in vxlan.calico vxlan-v6.calico tunl0 cni0 flannel.1 flannel-v6.1; do
    ip link del "$l" 2>/dev/null || true
  done
}

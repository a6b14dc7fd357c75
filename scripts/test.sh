#!/usr/bin/env bash
# Install what the tests need (idempotent) and run the whole suite: lint, types, architecture
# contract, unit/render tests and the real-host rig tests. Needs root on Debian 12 (the rig
# tests boot systemd-nspawn machines). The lab is torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
# docker-registry: the lab's image registry; gcc, libc6-dev, libseccomp-dev, pkg-config: the
# lab's cgo builds (runc with seccomp, flannel), see src/homekube/lab/artifacts/recipes.py;
# and shellcheck for the host programs homekube ships (src/homekube/scripts/*.sh)
for p in systemd-container debootstrap nftables iproute2 openssl curl gpg \
    docker-registry gcc libc6-dev libseccomp-dev pkg-config shellcheck; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# the lab runs its own registry on the bridge, not the packaged one on :5000
systemctl disable --now docker-registry >/dev/null 2>&1 || true
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
trap '.venv/bin/homekube lab down >/dev/null 2>&1 || true' EXIT
# the real-cluster tests need the lab's Kubernetes artifacts: built from Go modules the first
# time (15-30 min on 2 cores), then cached in /var/cache/homekube (about a second). Those of
# the default minor here; the minor-upgrade test (run last) gets the previous minor's itself,
# building them when missing or waiting for a build in progress (.ci/run starts one early).
.venv/bin/homekube lab artifacts --kubernetes-version 1.36
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
# every shipped host program, and this script itself
shellcheck src/homekube/scripts/*.sh scripts/test.sh .ci/run
.venv/bin/python -m pytest -q "$@"

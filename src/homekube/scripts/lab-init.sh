#!/bin/sh
# PID 1 of a homekube lab host (written by homekube): cgroup controllers writable, then systemd.
for d in /sys/fs/cgroup/*/; do
    mountpoint -q "$d" && mount -o remount,bind,rw "$d"
done
exec /lib/systemd/systemd "$@"

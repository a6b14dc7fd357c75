"""fdatasync latency of the etcd data dir's filesystem (for `homekube check`), snippet + parser.

etcd's guidance: the 99th percentile of WAL fdatasync should stay under 10 ms, or heartbeats
are missed and leaders flap on slow disks (the seed's old laptop). The probe writes 2300-byte
blocks (about one WAL entry) and fdatasyncs each, like etcd's WAL does, in a scratch file on
the same filesystem; python3 is used when present for per-write timing, else dd's average.
"""

from __future__ import annotations

from dataclasses import dataclass

from homekube.facts.base import Fact, shell_quote

WARN_P99_MS = 10.0

_PY = (
    "import os,sys,time\n"
    "p=sys.argv[1]; fd=os.open(p,os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o600); b=b'x'*2300; t=[]\n"
    "try:\n"
    " for _ in range(200):\n"
    "  s=time.perf_counter(); os.write(fd,b); os.fdatasync(fd); t.append(time.perf_counter()-s)\n"
    "finally:\n"
    " os.close(fd); os.unlink(p)\n"
    "t.sort(); print('p99_ms=%.3f' % (t[int(len(t)*0.99)-1]*1e3)); print('mean_ms=%.3f' % (sum(t)/len(t)*1e3))\n"
)


@dataclass(frozen=True)
class SyncLatency:
    p99_ms: float | None
    mean_ms: float | None

    @property
    def slow(self) -> bool:
        v = self.p99_ms if self.p99_ms is not None else self.mean_ms
        return v is not None and v > WARN_P99_MS


def parse_latency(text: str) -> SyncLatency:
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def num(k: str) -> float | None:
        try:
            return float(kv[k])
        except (KeyError, ValueError):
            return None

    return SyncLatency(num("p99_ms"), num("mean_ms"))


def fsync_latency(data_dir: str) -> Fact[SyncLatency]:
    d = shell_quote(data_dir)
    cmd = (
        f"q={d}; while [ ! -d \"$q\" ]; do q=$(dirname \"$q\"); done; f=\"$q/.homekube-fsync-probe\"; "
        "if command -v python3 >/dev/null; then python3 -c " + shell_quote(_PY) + " \"$f\"; "
        "else s=$(date +%s%N); dd if=/dev/zero of=\"$f\" bs=2300 count=200 oflag=dsync 2>/dev/null; "
        "e=$(date +%s%N); rm -f \"$f\"; echo \"mean_ms=$(( (e - s) / 200000 )).$(( (e - s) / 2000 % 100 ))\"; fi"
    )
    return Fact("fsync", cmd, parse_latency)

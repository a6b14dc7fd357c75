"""The executor's reading of a host's streamed output (FakeTransport replays what a host
script prints): progress events while it runs, the error of a timed-out step, one retry of a
package step after a network error, and the kind and limit of each step; which exceptions
become a host's failure and how a bug surfaces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from homekube.errors import ConnectError, HostError, LockedError
from homekube.executor import DEFAULT_TIMEOUTS, Event, execute
from homekube.plan.model import Change, PhasePlan, Plan, Run, kind_of
from homekube.plan.order import declare, parallel
from homekube.plan.script import STEP_MARK
from homekube.runlog import RunLog
from homekube.transport.base import ExecResult, LineSink
from homekube.transport.fake import FakeTransport

PKG = Run("export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y socat",
          "install socat")


def plan(*changes: Change) -> Plan:
    return Plan("c", sorted({c.host for c in changes}), [PhasePlan("hostprep", "Host preparation", changes)])


def ch(host: str, summary: str, *runs: Run) -> Change:
    return Change(host, "hostprep", summary, summary, "why", runs)


def m(*words: object) -> str:
    return " ".join([STEP_MARK, *map(str, words)])


def test_kinds_and_limits() -> None:
    assert kind_of(PKG) == "package"
    assert kind_of(Run("dnf install -y -q cri-o")) == "package"
    assert kind_of(Run("curl -fsSL -o /tmp/x https://example.invalid/x")) == "package"
    assert kind_of(Run("kubeadm init --config /etc/kubernetes/x.yaml")) == "kubeadm"
    assert kind_of(Run("kubectl -n x rollout status deployment/y")) == "wait"
    assert kind_of(Run("true", "wait until etcd is healthy")) == "wait"
    assert kind_of(Run("systemctl daemon-reload")) == "default"
    assert kind_of(Run("apt-get install x", kind="default")) == "default"
    assert DEFAULT_TIMEOUTS["package"] > DEFAULT_TIMEOUTS["default"]


def test_a_timed_out_step_names_host_phase_step_limit_and_last_lines() -> None:
    out = "\n".join([m(0), m("run", 0, 0, 20), "Reading package lists...",
                     "0% [Connecting to 10.77.2.1 (10.77.2.1)]", m("timeout", 0, 0, 20)])
    events: list[Event] = []
    h2 = FakeTransport("h2", lambda s: ExecResult(124, out, ""))
    h1 = FakeTransport("h1", lambda s: ExecResult(0, "\n".join([m(0), m("run", 0, 0, 20), m("done")]), ""))
    p = plan(ch("h1", "install socat", PKG), ch("h2", "install socat", PKG))
    res = asyncio.run(execute(p, {"h1": h1, "h2": h2}, progress=events.append, timeouts={"package": 20}))
    assert [c.host for c in res.applied] == ["h1"]
    (err,) = res.failed
    text = str(err)
    assert text.startswith("h2: hostprep / install socat: timed out after 20 s")
    assert "timeouts.package in cluster.yaml" in text and "stopped on the host" in text
    assert text.rstrip().endswith("0% [Connecting to 10.77.2.1 (10.77.2.1)]")
    assert len(h2.scripts) == 1  # a timeout is not retried: the run ends within its limit
    kinds = [(e.kind, e.host) for e in events]
    assert ("start", "h2") in kinds and ("fail", "h2") in kinds and ("done", "h1") in kinds
    run = next(e for e in events if e.kind == "run" and e.host == "h2")
    assert run.timeout == 20 and run.text == "install socat"
    assert "hk_step 20 " in h2.scripts[0]  # the host enforces the limit


def test_a_package_step_is_retried_once_after_a_network_error() -> None:
    calls: list[str] = []

    def host(script: str) -> ExecResult:
        calls.append(script)
        if len(calls) == 1:
            return ExecResult(100, "\n".join([m(0), m(1), m("run", 1, 0, 900),
                                              "E: Failed to fetch http://deb.debian.org/x  Connection failed"]), "")
        return ExecResult(0, "\n".join([m(0), m("run", 0, 0, 900), m("done")]), "")

    events: list[Event] = []
    t = FakeTransport("h1", host)
    p = plan(ch("h1", "write a file", Run("true")), ch("h1", "install socat", PKG))
    res = asyncio.run(execute(p, {"h1": t}, progress=events.append))
    assert res.ok and len(res.applied) == 2
    assert len(calls) == 2
    assert "write a file" not in calls[1] and "apt-get install -y socat" in calls[1]  # from the failed one on
    assert [e.text for e in events if e.kind == "retry"] == ["a network error; trying once more"]


def test_a_second_network_error_or_another_failure_is_not_retried() -> None:
    out = "\n".join([m(0), m("run", 0, 0, 900), "E: Could not connect to 10.77.2.1:3152"])
    t = FakeTransport("h1", lambda s: ExecResult(100, out, ""))
    res = asyncio.run(execute(plan(ch("h1", "install socat", PKG)), {"h1": t}))
    assert len(t.scripts) == 2 and not res.ok
    assert "failed (exit 100)" in str(res.failed[0])
    other = FakeTransport("h1", lambda s: ExecResult(1, "\n".join([m(0), m("run", 0, 0, 300), "boom"]), ""))
    res = asyncio.run(execute(plan(ch("h1", "daemon-reload", Run("systemctl daemon-reload"))), {"h1": other}))
    assert len(other.scripts) == 1 and str(res.failed[0]).rstrip().endswith("boom")


def test_an_apt_lock_held_by_someone_else_is_explained() -> None:
    out = "\n".join([m(0), m("run", 0, 0, 900), "E: Could not get lock /var/lib/dpkg/lock-frontend. "
                     "It is held by process 4242 (unattended-upgr)", "E: Unable to acquire the dpkg frontend lock"])
    t = FakeTransport("h1", lambda s: ExecResult(100, out, ""))
    res = asyncio.run(execute(plan(ch("h1", "install socat", PKG)), {"h1": t}))
    (err,) = res.failed
    assert err.hint is not None and "process 4242, unattended-upgr" in err.hint


# ------------------------------------------------------------------ homekube's errors vs bugs

OK_SCRIPT = ExecResult(0, "\n".join([m(0), m("run", 0, 0, 300), m("done")]), "")
FIRST, LATER = declare("hostprep", parallel("first"), parallel("later"))


class SlowFake(FakeTransport):
    """Answers after the other hosts have failed, so a wave that stopped early would show."""

    async def run(self, script: str, *, timeout: float | None = None,
                  on_line: LineSink | None = None) -> ExecResult:
        await asyncio.sleep(0.05)
        return await super().run(script, timeout=timeout, on_line=on_line)


def two_waves(*hosts: str) -> Plan:
    cs = [replace(ch(h, f"first on {h}", Run("true")), order=FIRST) for h in hosts]
    cs += [replace(ch(h, f"later on {h}", Run("true")), order=LATER) for h in hosts]
    return plan(*cs)


def raising(e: BaseException) -> Callable[[str], ExecResult]:
    def handler(script: str) -> ExecResult:
        raise e
    return handler


def test_homekube_errors_and_io_errors_are_host_failures_and_stop_after_the_wave() -> None:
    lost = ConnectError("connection lost: reset by peer", host="h1", hint="check the network")
    hosts = {"h1": FakeTransport("h1", raising(lost)),
             "h2": FakeTransport("h2", raising(TimeoutError("timed out"))),
             "h3": FakeTransport("h3", raising(OSError(28, "No space left on device"))),
             "h4": SlowFake("h4", lambda s: OK_SCRIPT)}
    res = asyncio.run(execute(two_waves(*hosts), dict(hosts)))
    assert [c.summary for c in res.applied] == ["first on h4"]  # h4 finished its part of the wave
    assert all(isinstance(e, HostError) for e in res.failed)
    by_host = {e.host: e for e in res.failed}
    assert str(by_host["h1"]) == "h1: hostprep: connection lost: reset by peer"  # host named once
    assert by_host["h1"].hint == "check the network"
    assert "timed out" in str(by_host["h2"]) and "No space left" in str(by_host["h3"])
    assert all(len(t.scripts) == 1 for t in hosts.values())  # the later wave did not start


def test_a_bug_lets_the_wave_finish_then_surfaces_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    hosts = {"h1": FakeTransport("h1", raising(KeyError("kubelet"))),
             "h2": SlowFake("h2", lambda s: OK_SCRIPT),
             "h3": FakeTransport("h3", raising(LockedError("another homekube run holds the host lock",
                                                           host="h3")))}
    events: list[Event] = []
    caplog.set_level(logging.DEBUG, logger="homekube.executor")
    with pytest.raises(KeyError, match="kubelet") as raised:
        asyncio.run(execute(two_waves(*hosts), dict(hosts), progress=events.append))
    # the other hosts finished the wave; nothing after it ran
    assert ("done", "h2") in [(e.kind, e.host) for e in events]
    assert all(len(t.scripts) == 1 for t in hosts.values())
    notes = "\n".join(raised.value.__notes__)
    assert "h3: hostprep: another homekube run holds the host lock" in notes
    assert "1 change(s) on h2" in notes
    # one line for the progress view, the traceback for the run log and the debug log
    (fail,) = [e for e in events if e.kind == "fail" and e.host == "h1"]
    assert fail.text == "internal error (a bug): KeyError: 'kubelet'"
    (bug,) = [e for e in events if e.kind == "bug"]
    assert bug.host == "h1" and bug.text.startswith("Traceback") and "KeyError: 'kubelet'" in bug.text
    assert "in handler" in bug.text  # where it was raised
    (rec,) = [r for r in caplog.records if r.name == "homekube.executor"]
    assert rec.exc_info is not None and rec.exc_info[1] is raised.value
    assert events[-1].kind == "end"


def test_the_run_log_keeps_a_bugs_traceback(tmp_path: Path) -> None:
    with RunLog(tmp_path, "apply", argv=["apply"]) as rl:
        rl.event(Event("bug", "h1", "hostprep", text="Traceback (most recent call last):\n"
                                                     "  File \"x.py\", line 1\nKeyError: 'kubelet'"))
    text = rl.path.read_text()
    assert "h1: BUG in phase hostprep:" in text and "KeyError: 'kubelet'" in text
    assert 'File "x.py", line 1' in text

"""One exception tree for everything homekube reports to a user.

    HomekubeError                 exit 1 unless a subclass says otherwise
    ├── ConfigError               exit 2: cluster.yaml is wrong (carries every problem at once)
    ├── UsageError                exit 2: the command line is wrong
    ├── PreflightError            exit 3: a host cannot take the cluster (too small, wrong OS, ...)
    ├── ConnectError              exit 3: a host cannot be reached or authenticated
    │   └── TransferError         exit 3: a file cannot be copied from a host
    ├── HostError                 exit 1: a step failed on a host (names host, phase and step)
    ├── LockedError               exit 1: another homekube holds the host lock
    ├── RefusedError              exit 1: the change is unsafe (e.g. would lose etcd quorum)
    ├── ArtifactError             exit 1: something that must be downloaded cannot be fetched
    ├── PkiStoreError             exit 1: the operator's CA cannot be used (homekube.pki.store)
    │   ├── InsecureKeyError      a key others can read
    │   └── BrokenCAError         CA files that do not fit together
    └── LabError                  exit 1: the lab cannot be built, started or stopped (homekube.lab)

Every error knows the host it concerns (when there is one) and a hint for the user. The CLI
turns them into a message, a hint and an exit code; anything else is a bug and goes to the
debug log with its traceback.

Foreign errors become these where they enter: the transports (homekube.transport) turn
asyncssh's errors, OSError and a failed local process into ConnectError / TransferError
naming the host and what was being done; a script that ran and failed becomes a HostError
naming the phase and step (homekube.executor).
"""

from __future__ import annotations

from dataclasses import dataclass


class HomekubeError(Exception):
    """Base of every error a user may see; never shown with a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.host = host
        self.hint = hint

    def __str__(self) -> str:
        prefix = f"{self.host}: " if self.host else ""
        return f"{prefix}{self.message}"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file, located as precisely as the YAML allows."""

    file: str
    line: int
    column: int
    path: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        what = f"{self.path}: " if self.path else ""
        return f"{where}: {what}{self.message}"


class ConfigError(HomekubeError):
    """cluster.yaml cannot be used; `problems` lists every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[ConfigProblem], *, hint: str | None = None):
        self.problems = problems
        text = "\n".join(str(p) for p in problems)
        count = len(problems)
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in the configuration:\n{text}",
            hint=hint,
        )


class UsageError(HomekubeError):
    exit_code = 2


class PreflightError(HomekubeError):
    """Hosts are not fit for the cluster; `problems` are (host, message) pairs."""

    exit_code = 3

    def __init__(self, problems: list[tuple[str, str]], *, hint: str | None = None):
        self.problems = problems
        text = "\n".join(f"{h}: {m}" for h, m in problems)
        super().__init__(f"preflight refused:\n{text}", hint=hint)


class ConnectError(HomekubeError):
    exit_code = 3


class TransferError(ConnectError):
    """A file could not be copied from a host (the connection, the host's file, or the copy)."""


class HostError(HomekubeError):
    """A step failed on a host; carries the phase and the step so the user knows where."""

    def __init__(
        self,
        message: str,
        *,
        host: str,
        phase: str | None = None,
        step: str | None = None,
        output: str = "",
        hint: str | None = None,
    ):
        self.phase = phase
        self.step = step
        self.output = output
        where = " / ".join(x for x in (phase, step) if x)
        full = f"{where}: {message}" if where else message
        if output.strip():
            tail = "\n".join(output.strip().splitlines()[-15:])
            full = f"{full}\n{tail}"
        super().__init__(full, host=host, hint=hint)


class LockedError(HomekubeError):
    pass


class RefusedError(HomekubeError):
    pass


class ArtifactError(HomekubeError):
    pass

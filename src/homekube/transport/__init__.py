"""How homekube reaches a host: one small interface, three implementations (ssh, local, fake)."""

from homekube.transport.base import ExecResult, Transport

__all__ = ["ExecResult", "Transport"]

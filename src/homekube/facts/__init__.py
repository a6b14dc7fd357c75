"""Host facts: one exec per host gathers everything planning needs."""

from __future__ import annotations

from homekube.facts.host import HostFacts, build_host_facts
from homekube.facts.system import Probes

__all__ = ["HostFacts", "Probes", "build_host_facts"]

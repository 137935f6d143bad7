"""Ports: what a memory backend offers the policy controller.

What is modelled
----------------
The controller (:mod:`hvmem.policy.controller`) runs a policy against a
*backend*: the page-level simulator (``hvmem.backends.simulated``) or real
QEMU/KVM guests (``hvmem.backends.qemu``). Both implement :class:`MemoryBackend`
(docs/architecture.md), so the policy sees only samples and returns only plans
(:mod:`hvmem.policy.samples`). This module defines the protocol and nothing
else; it imports no backend (the layering test keeps ``policy`` below them).

Contract
--------
``sample()`` returns one :class:`~hvmem.policy.samples.HostSample` and one
:class:`~hvmem.policy.samples.VmSample` per defined VM (names unique), taken at
one instant; the host's ``state`` is the backend's tracked memory state
(:class:`~hvmem.policy.state_tracker.StateTracker`, with hysteresis).

``apply(plans)`` carries out a plan until the next one: set balloon targets,
grow swapped/compressed memory up to ``swap_target_mib`` (compressing first if
``compress``), block allocations of ``blocked`` VMs, and, when ``plans`` is a
:class:`~hvmem.policy.samples.Plans` with a ``host`` part, the sharing knobs. A
VM without a plan (powered off) is left alone; a plan never names a VM the
sample did not. ``apply`` returns at once: a balloon moves over the following
seconds, as the driver polls its target (1 s [OSDI02 §3.2]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from hvmem.policy.samples import HostSample, VmPlan, VmSample

__all__ = ["MemoryBackend"]


@runtime_checkable
class MemoryBackend(Protocol):
    """A host whose memory a policy controls: observe it, then tell it what to do."""

    def sample(self) -> tuple[HostSample, Sequence[VmSample]]:
        """Observe the host and every defined VM now."""
        ...

    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Carry out one plan per powered-on VM (and the host part, if any)."""
        ...

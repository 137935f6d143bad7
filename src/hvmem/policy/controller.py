"""The policy controller: sample -> plan -> apply, once per balance period.

What is modelled
----------------
ESX recomputes memory targets periodically, every ``Mem.BalancePeriod`` = 15 s
[VS4-ATTR][VS-ADV70][ESX25-p343]; MOM and Proxmox run the
same loop every 15 s (vdsm) and 10 s (pvestatd) [MOM][PVE-BALLOON].
:class:`PolicyController` is that loop, and only the loop: it owns no thread and
reads no clock. The caller (the simulator's tick, or the QEMU backend's main
loop) calls :meth:`PolicyController.step` with the current time; when a
balance period has passed since the last decision (a ``core.period.Period``,
kept in whole nanoseconds), the controller takes a sample from the backend,
asks the policy for plans, hands them to the backend and records the decision
in a bounded history (a deque) for reports. Times come in seconds, as the
policy speaks them, and are rounded to nanoseconds once, here: a simulated
time (integer nanoseconds) comes back exactly, so "a period has passed" needs
no float tolerance.

Invariants: time never goes backwards; decisions are at least one balance
period apart unless forced; a plan never names a VM the sample did not; the
history holds the latest ``history_len`` decisions, oldest first.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvmem.core.period import Period
from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.planner import DEFAULT_BALANCE_PERIOD_S
from hvmem.policy.policies import Policy
from hvmem.policy.ports import MemoryBackend
from hvmem.policy.samples import HostSample, VmPlan, VmSample
from hvmem.units import NS_PER_S, ns_to_s

__all__ = ["DEFAULT_HISTORY_LEN", "Decision", "PolicyController"]

#: Decisions kept for reports: one hour at the 15 s balance period.
DEFAULT_HISTORY_LEN = 240


@dataclass(frozen=True, slots=True)
class Decision:
    """One turn of the loop, kept in :attr:`PolicyController.history`.

    Attributes:
        time_s: the ``now_s`` the step was called with.
        host: the host sample the plans were made from.
        vms: the VM samples.
        plans: what the policy decided (applied to the backend).
    """

    time_s: float
    host: HostSample
    vms: tuple[VmSample, ...]
    plans: Mapping[str, VmPlan]


class PolicyController:
    """Runs ``policy`` against ``backend`` once per balance period.

    Args:
        policy: the decision logic (see :mod:`hvmem.policy.policies`).
        backend: the host it controls (:class:`~hvmem.policy.ports.MemoryBackend`).
        balance_period_s: time between decisions (``Mem.BalancePeriod`` 15 s).
        history_len: decisions kept in :attr:`history`.

    Attributes:
        history: the latest decisions, oldest first.
        steps: decisions taken so far (an event count).

    Raises:
        ConfigError: a non-positive period or history length.
    """

    def __init__(
        self,
        policy: Policy,
        backend: MemoryBackend,
        balance_period_s: float = DEFAULT_BALANCE_PERIOD_S,
        *,
        history_len: int = DEFAULT_HISTORY_LEN,
    ) -> None:
        if not (math.isfinite(balance_period_s) and _ns(balance_period_s) > 0):
            raise ConfigError(f"balance_period_s: must be a positive number of nanoseconds, "
                              f"found {balance_period_s}")
        if history_len < 1:
            raise ConfigError(f"history_len: must be at least 1, found {history_len}")
        self.policy = policy
        self.backend = backend
        self.balance_period_s = float(balance_period_s)
        self.history: deque[Decision] = deque(maxlen=history_len)
        self.steps = 0
        self._last_call_s: float | None = None
        self._period = Period(_ns(balance_period_s))

    @property
    def last(self) -> Decision | None:
        """The latest decision, or None before the first."""
        return self.history[-1] if self.history else None

    @property
    def next_due_s(self) -> float | None:
        """When the next decision is due (None: at the first step)."""
        next_ns = self._period.next_ns
        return None if next_ns is None else ns_to_s(next_ns)

    def due(self, now_s: float) -> bool:
        """Whether :meth:`step` at ``now_s`` would decide."""
        return self._period.due(_ns(now_s))

    def step(self, now_s: float, *, force: bool = False) -> Mapping[str, VmPlan] | None:
        """Sample, plan and apply if a balance period has passed (or ``force``).

        Args:
            now_s: the current time in seconds (simulated or wall clock).
            force: decide now even if the period has not passed (e.g. a VM was
                added, or free memory crossed a threshold [OSDI02 §6.3]).

        Returns:
            The plans applied, or None if no decision was due.

        Raises:
            InvariantViolation: time went backwards, or the policy planned for a
                VM the sample does not have.
        """
        if not math.isfinite(now_s):
            raise InvariantViolation(f"controller time must be finite, found {now_s}")
        if self._last_call_s is not None and now_s < self._last_call_s:
            raise InvariantViolation(
                f"controller time went backwards: {now_s} s after {self._last_call_s} s"
            )
        self._last_call_s = now_s
        if not (force or self.due(now_s)):
            return None
        host, vms = self.backend.sample()
        vms = tuple(vms)
        plans = self.policy.plan(host, vms)
        _check_plans(plans, vms)
        self.backend.apply(plans)
        self.history.append(Decision(time_s=now_s, host=host, vms=vms, plans=plans))
        self.steps += 1
        self._period.start(_ns(now_s))  # a forced decision starts a new period too
        return plans


def _ns(time_s: float) -> int:
    """A time in seconds as whole nanoseconds (exact for a simulated time)."""
    return round(time_s * NS_PER_S)


def _check_plans(plans: Mapping[str, VmPlan], vms: Sequence[VmSample]) -> None:
    names = {vm.name for vm in vms}
    unknown = sorted(set(plans) - names)
    if unknown:
        raise InvariantViolation(f"policy planned for VMs not in the sample: {', '.join(unknown)}")

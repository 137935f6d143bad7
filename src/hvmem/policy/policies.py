"""Policies by name, and the one place a ``[policy]`` table becomes a policy object.

What is modelled
----------------
A policy turns one host sample and the VM samples into :class:`Plans`
(docs/architecture.md, the policy interface). Five are registered in :data:`POLICIES`:

* ``esx`` (default, :class:`~hvmem.policy.esx.EsxPolicy`): share-based
  entitlement with the idle memory tax, the host memory states and the
  reclamation planner [OSDI02 §5, §6.3];
* ``static`` (:class:`~hvmem.policy.esx.StaticPolicy`): no reclamation at all,
  the control run of a comparison;
* ``mom`` and ``proxmox`` (:mod:`hvmem.policy.kvm`): oVirt MOM's rules and
  Proxmox VE auto-ballooning, the KVM baselines [MOM][PVE-BALLOON];
* ``psi`` (:class:`~hvmem.policy.psi.PsiPolicy`): each VM's memory pressure
  held near a target, as senpai does [SENPAI]; no parameters.

The policy configuration
------------------------
:class:`PolicyConfig` is a scenario's ``[policy]`` table: the policy's name, the
balance period, the idle tax and the policy's own parameters. It is built once
(by the scenario loader, or in code), and everything that runs a policy (the
simulator, the controller of real QEMU guests, ``hvmem run`` of a scenario on
real guests) turns it into a policy object with :func:`make_policy`, so all of
them run the same policy with the same parameters. Each value has one owner::

    [policy]
    name = "esx"              the policy (POLICIES)
    balance_period = "15s"    Mem.BalancePeriod: the controller asks every policy
                              for plans once a period; the esx planner's rate
                              limits are per period, so PlannerParams.balance_period_s
                              is set from it, never on its own
    idle_tax_frac = 0.75      Mem.IdleTax: EsxParams.tax_frac is set from it
    [policy.params]           the named policy's own parameters, every field of
                              EsxParams (the planner's fields directly:
                              swap_out_mib_s = 50), MomParams or ProxmoxParams but
                              the two above; static has none

An unknown or misspelt parameter is refused like any unknown field
(``policy.params.ballon_enabled: unknown field (did you mean
'balloon_enabled'?)``). In code ``params`` is the parameters object, or a table
of them as a file writes it, or None for the policy's defaults.

Running another policy than the one named (``hvmem compare``, ``--policy``):
:meth:`PolicyConfig.for_policy` keeps the balance period and the idle tax and
takes the other policy's default parameters; ``[policy.params]`` belong to the
policy they were written for.

Sources: the keys in brackets resolve in ``docs/references.md``; the baselines also
cite ``owner/repo:path`` at the commits read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from hvmem.errors import ConfigError
from hvmem.params import build, check, choice, fail, number, table, time
from hvmem.policy.entitlement import DEFAULT_TAX_FRAC, MAX_TAX_FRAC
from hvmem.policy.esx import EsxParams, EsxPolicy, StaticPolicy
from hvmem.policy.kvm import MomParams, MomPolicy, ProxmoxParams, ProxmoxPolicy
from hvmem.policy.planner import (
    DEFAULT_BALANCE_PERIOD_S,
    MAX_BALANCE_PERIOD_S,
    MIN_BALANCE_PERIOD_S,
)
from hvmem.policy.psi import PsiPolicy
from hvmem.policy.samples import HostSample, VmPlan, VmSample
from hvmem.units import NS_PER_S, ns_to_s

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "POLICY_NAMES",
    "EsxParams",
    "EsxPolicy",
    "MomParams",
    "MomPolicy",
    "Policy",
    "PolicyConfig",
    "ProxmoxParams",
    "ProxmoxPolicy",
    "StaticPolicy",
    "make_policy",
]


@runtime_checkable
class Policy(Protocol):
    """Pure decision logic: samples in, plans out (docs/architecture.md).

    Attributes:
        name: the registry name (``"esx"``, ``"static"``, ``"mom"``, ``"proxmox"``).
    """

    name: str

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Mapping[str, VmPlan]:
        """Decide one balance period: one plan per powered-on VM."""
        ...


#: The policy used when none is named.
DEFAULT_POLICY = "esx"

#: Name -> policy class; each takes its ``params_type`` instance (or None for defaults).
POLICIES: Mapping[str, type[EsxPolicy | StaticPolicy | MomPolicy | ProxmoxPolicy
                            | PsiPolicy]] = (
    MappingProxyType(
        {
            "esx": EsxPolicy,
            "static": StaticPolicy,
            "mom": MomPolicy,
            "proxmox": ProxmoxPolicy,
            "psi": PsiPolicy,
        }
    )
)
#: The names a scenario's ``[policy] name`` may take.
POLICY_NAMES = tuple(POLICIES)
_PARAMS_TYPES = (EsxParams, MomParams, ProxmoxParams)


def _unknown_policy(name: object) -> ConfigError:
    return ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """The memory policy: which one decides, how often, its idle tax and its own parameters.

    ``params`` is resolved on construction: the named policy's parameters object
    with the idle tax and the balance period filled in (what the policy runs
    with), or None for ``static``.
    """

    name: str = choice(DEFAULT_POLICY, POLICY_NAMES, "the policy that decides (esx, static, "
                       "mom, proxmox, psi)")
    balance_period_ns: int = time(
        round(DEFAULT_BALANCE_PERIOD_S * NS_PER_S), "Mem.BalancePeriod: time between plans",
        lo=round(MIN_BALANCE_PERIOD_S * NS_PER_S), hi=round(MAX_BALANCE_PERIOD_S * NS_PER_S),
        source="15 s, ESX 2.5 to ESXi 7 [ESX25-p343][VS4-ATTR][VS-ADV70]")
    idle_tax_frac: float = number(
        DEFAULT_TAX_FRAC, "Mem.IdleTax: the idle memory tax of esx; 0 switches it off",
        lo=0.0, hi=MAX_TAX_FRAC, unit="frac",
        source="75 %, 0-99 %, ESX 1.5 to ESXi 9.0.1 [OSDI02 §5.2][VS4-ATTR][LAMW]")
    params: EsxParams | MomParams | ProxmoxParams | None = table(
        _PARAMS_TYPES, "the named policy's own parameters (below)", default=None,
        optional=True, none="the policy's defaults",
        expect="a table of the named policy's parameters")

    def __post_init__(self) -> None:
        check(self, skip=("params",))  # which parameters depends on the name
        kind = POLICIES[self.name].params_type
        params: Any = self.params
        if params is None:
            params = None if kind is type(None) else kind()
        elif isinstance(params, Mapping):
            where = ("PolicyConfig", "params")
            if kind is type(None):
                for key in params:
                    raise ConfigError(f"unknown field (the {self.name} policy has no "
                                      "parameters)", path=(*where, key))
                params = None
            else:
                params = build(kind, params, where)
        elif not isinstance(params, _PARAMS_TYPES):
            raise fail(self, "params", "a table of the named policy's parameters")
        elif not isinstance(params, kind):
            raise fail(self, "params", f"{kind.__name__} (the {self.name} policy's)",
                       type(params).__name__)
        if isinstance(params, EsxParams):
            planner = params.planner
            period_s = ns_to_s(self.balance_period_ns)
            if planner.balance_period_s != period_s:
                planner = replace(planner, balance_period_s=period_s)
            if params.tax_frac != self.idle_tax_frac or params.planner is not planner:
                params = replace(params, tax_frac=self.idle_tax_frac, planner=planner)
        object.__setattr__(self, "params", params)  # resolving a frozen dataclass's field

    @property
    def balance_period_s(self) -> float:
        """The balance period in seconds (what the controller and the planner use)."""
        return ns_to_s(self.balance_period_ns)

    def for_policy(self, name: str | None) -> PolicyConfig:
        """This configuration with another policy (None: this one), that policy's defaults.

        Raises:
            ConfigError: an unknown name (the message lists the known ones).
        """
        if name is None or name == self.name:
            return self
        if name not in POLICIES:
            raise _unknown_policy(name)
        return replace(self, name=name, params=None)


def make_policy(config: PolicyConfig | str = DEFAULT_POLICY) -> Policy:
    """The policy object of a configuration: the one way a policy is built to run.

    Args:
        config: the ``[policy]`` configuration, or a registered name (its defaults).

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if isinstance(config, str):
        if config not in POLICIES:
            raise _unknown_policy(config)
        config = PolicyConfig(name=config)
    return POLICIES[config.name](config.params)

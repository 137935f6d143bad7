"""The workload for a parameters object: one table from parameter class to workload class.

Scenarios and tests describe a workload by its parameters (the ``*Params``
classes of :mod:`hvmem.workloads.synthetic` and :mod:`hvmem.workloads.replay`);
:func:`make_workload` builds the matching workload. It is the one module that
knows every kind, so replay and the synthetic workloads need not import each
other.
"""

from __future__ import annotations

import numpy as np

from hvmem.errors import ConfigError
from hvmem.workloads.base import Workload
from hvmem.workloads.churn import ChurnWorkload
from hvmem.workloads.demand import DemandParams, DemandWorkload
from hvmem.workloads.generators import GENERATOR_WORKLOADS
from hvmem.workloads.phases import PhasesWorkload
from hvmem.workloads.replay import ReplayParams, ReplayWorkload
from hvmem.workloads.synthetic import ChurnParams, PhasesParams

__all__ = ["make_workload"]

_WORKLOAD_OF: dict[type, type] = {
    **GENERATOR_WORKLOADS,
    PhasesParams: PhasesWorkload,
    ChurnParams: ChurnWorkload,
    ReplayParams: ReplayWorkload,
    DemandParams: DemandWorkload,
}


def make_workload(params: object, rng: np.random.Generator, *, name: str | None = None,
                  content_key: int | None = None) -> Workload:
    """The workload for a parameters object (synthetic or :class:`ReplayParams`).

    Args:
        params: one of the ``*Params`` classes of ``synthetic.py`` or ``replay.py``.
        rng: the workload's random stream (a named stream of ``RngStreams``).
        name: the workload's name (defaults to its kind).
        content_key: keys the private page tokens; must differ between the
            workloads of a run (default: drawn from ``rng``, which is distinct
            for distinct stream names).

    Raises:
        ConfigError: ``params`` is not a workload's parameters.
    """
    cls = _WORKLOAD_OF.get(type(params))
    if cls is None:
        raise ConfigError(f"workload: unknown parameters {type(params).__name__}")
    return cls(params, rng, name=name, content_key=content_key)

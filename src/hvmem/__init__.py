"""hvmem: hypervisor memory resource management, the way VMware ESX does it.

A page-level simulator of a host and its guests (translation, lazy allocation,
ballooning, page sharing, compression, swapping, memory states, shares) and a
controller that runs the same policy against real QEMU/KVM guests.

For notebooks and scripts::

    import hvmem
    scenario = hvmem.load_scenario("scenarios/demo.toml")
    result = hvmem.Simulation(scenario).run()
    result.vm_rows[:3]          # esxtop-named metrics per VM per tick

The names below are loaded on first use, so ``import hvmem`` stays light.
"""

__version__ = "0.1.0"

from hvmem.compile_cache import key_numba_cache  # noqa: E402 (before any module imports Numba)

key_numba_cache()

__all__ = ["RunResult", "Simulation", "__version__", "load_scenario", "read_results",
           "write_results"]

_LAZY = {
    "load_scenario": ("hvmem.scenario.loader", "load_scenario"),
    "Simulation": ("hvmem.sim", "Simulation"),
    "RunResult": ("hvmem.results", "RunResult"),
    "write_results": ("hvmem.results", "write_results"),
    "read_results": ("hvmem.results", "read_results"),
}


def __getattr__(name: str):
    """Load the public API lazily (PEP 562)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hvmem' has no attribute {name!r}")

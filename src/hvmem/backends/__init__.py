"""Backends: the hosts a policy controls (docs/architecture.md, layers).

``qemu`` observes and controls real QEMU guests; the simulator's backend lives
with the simulation (:class:`hvmem.sim_backend.SimulatedBackend`, one layer
down: the simulation builds it). Both implement
:class:`hvmem.policy.ports.MemoryBackend`.
"""

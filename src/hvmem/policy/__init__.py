"""Policy: pure decision logic shared by the simulator and the QEMU controller.

Everything here turns observations (free memory, per-VM samples) into decisions
(host memory state, the reclamation actions it allows, per-VM plans) and nothing
else: no module in this package imports simulator code (``core``, ``hardware``,
``guest``, ``hypervisor``, ``workloads``) or a backend, only :mod:`hvmem.units`,
:mod:`hvmem.errors` and :mod:`hvmem.params` (the field declarations), so the
simulated host and the controller of real QEMU/KVM guests run exactly the same
policy (a layering test enforces the direction).
"""

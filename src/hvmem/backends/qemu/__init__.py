"""Real QEMU guests under the policy the simulator runs.

``qmp`` (a QMP client with timeouts), ``procfs`` (/proc readers), ``ksm`` (page
sharing), ``cgroups`` (hypervisor swapping through memory cgroups), ``backend``
(the :class:`~hvmem.policy.ports.MemoryBackend` over them, composed of
``sampling``, ``balloon`` and ``swap_limit``, with ``config`` and
``guest_state``), ``guest_image`` and ``launcher`` (a tiny cached guest and QEMU
command lines), ``control`` (the controller loop, results and metrics).
docs/architecture.md has the overview.
"""

"""hvmem: hypervisor memory resource management, the way VMware ESX does it.

A page-level simulator of a host and its guests (translation, lazy allocation,
ballooning, page sharing, compression, swapping, memory states, shares) and a
controller that runs the same policy against real QEMU/KVM guests.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

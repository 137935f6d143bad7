"""Architectural mechanisms shared by guest and hypervisor.

Frames, page tables, the walker, TLBs, the MMU, timing and the virtio balloon device.
"""

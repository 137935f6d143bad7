"""Reclamation mechanisms of the hypervisor: page sharing, ballooning, compression, swapping."""

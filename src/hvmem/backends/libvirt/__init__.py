"""The libvirt backend: the domains of a libvirt connection under the simulator's policy.

``connection.py`` (the optional ``libvirt`` module, connections, the host's
memory), ``domain.py`` (one domain's stats, balloon and memtune),
``state_file.py`` (what was changed, on disk before the change, and its undo)
and ``backend.py`` (:class:`LibvirtBackend`, the ``MemoryBackend``).
"""

"""Page replacement: which pages to evict, one interface for every user.

The guest kernel's reclaim, the host's swap selection and the replay of
reference strings (``hvmem paging``) choose victims through the policies here,
one module per policy, under the one set of names in ``names.py``. Importing
the package imports nothing else: ``names.py`` carries no Numba, so checking a
scenario does not compile kernels.
"""

"""Sweeps: one scenario run over a grid of parameter values and seeds (``hvmem sweep``).

``experiment.py`` reads an experiment file and expands it into runs, each
checked by the scenario loader before any starts; ``execute.py`` runs them on
a process pool or a Dask cluster; ``directory.py`` keeps the sweep's
directory (its runs, ``summary.parquet``, ``experiment.json``), which a second
invocation resumes.
"""

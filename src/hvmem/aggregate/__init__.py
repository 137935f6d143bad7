"""The aggregate fidelity: each VM's memory as masses of pages, stepped as arrays.

``fidelity = "aggregate"`` runs a scenario with the page-level run's policy
core, host states, planner, results and rows, but keeps no page: per VM, the
pages of each heat class (``classes.py``) in each backing and guest state,
moved by binomial draws at the rates the page model's mechanisms have
(``kernel.py``), for many hosts at once (``model.py``). ``sim.py`` runs one
scenario, ``backend.py`` is the policy's view of a host, ``fleet.py`` runs
thousands of hosts on a Dask cluster and ``validate.py`` compares the two
fidelities over seeds.
"""

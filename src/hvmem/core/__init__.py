"""Simulation kernel: what every model uses and that knows nothing about memory.

Seeded random streams (``rng``), periodic work on the simulated clock
(``period``), time series by column (``rows``), recency stamps (``stamps``) and
sorted page-number sets (``sets``).
"""

"""Simulation kernel: event engine, seeded random streams and statistics.

It knows nothing about memory.
"""

"""Thin shells for humans: the CLI, the esxtop-style view, reports and plots."""

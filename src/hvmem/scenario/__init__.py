"""Scenario files: TOML to typed configuration, with path-qualified errors."""

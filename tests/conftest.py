"""Test-wide settings.

Under CI (``CI`` set in the environment) hypothesis runs derandomized: the
same examples every run, so a landing never depends on luck. Locally it
explores new examples each run and remembers failures in ``.hypothesis/``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
# Ten times the examples, freshly random: `pytest --hypothesis-profile=long` or
# HYPOTHESIS_PROFILE=long (the property tests scale their counts by max_examples).
settings.register_profile("long", max_examples=1000)
if os.environ.get("CI"):
    settings.load_profile("ci")
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

"""Test-wide settings.

Under CI (``CI`` set in the environment) hypothesis runs derandomized: the
same examples every run, so a landing never depends on luck. Locally it
explores new examples each run and remembers failures in ``.hypothesis/``.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

"""Reading a scenario needs no guest machinery: the loader never imports the guest kernel."""

import subprocess
import sys


def test_loading_a_scenario_does_not_import_the_guest_kernel():
    # A fresh interpreter: this test process has imported everything already.
    code = ("import sys\n"
            "from hvmem.scenario.loader import load_scenario\n"
            "from hvmem.scenarios import builtin_scenario_path\n"
            "load_scenario(builtin_scenario_path('demo'))\n"
            "print(sorted(m for m in sys.modules if m.startswith('hvmem.guest')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "hvmem.guest.kernel" not in done.stdout
    assert "hvmem.guest.config" in done.stdout  # the settings it does need

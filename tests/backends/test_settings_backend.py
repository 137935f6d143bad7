"""End to end, setting by setting: the ``[backend]`` table reaches the real guests.

``hvmem run`` of a scenario with ``[backend] kind = "qemu"`` launches one QEMU guest per
VM with the in-guest workload and RAM backing the table asks for. Here the launcher and
the guests are faked (``fake_host``), and the case checks what the launcher was asked to
start; the QEMU integration suite (``test_qemu_integration.py``) runs the same path with
real guests, where KSM merges the ``shared`` data and a file-backed guest is swapped.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hvmem.ui.cli import app
from settings_runs import covers

SCENARIO = """
name = "qemu-settings"
duration = "2s"
[host]
memory = "600MiB"
[policy]
balance_period = "1s"
[backend]
kind = "{kind}"
shared = "{shared}"
private = "{private}"
touch = "{touch}"
file_backed = {file_backed}
[[vm]]
name = "web"
memory = "256MiB"
"""


@pytest.fixture
def launched(fake_launch, tmp_path):
    """Run a scenario with ``[backend]`` values; returns what ``launch`` was asked for."""
    calls = fake_launch

    def run(kind="qemu", shared="64MiB", private="32MiB", touch="5s", file_backed="false"):
        calls.clear()
        path = tmp_path / "s.toml"
        path.write_text(SCENARIO.format(kind=kind, shared=shared, private=private, touch=touch,
                                        file_backed=file_backed))
        out = tmp_path / f"res-{len(list(tmp_path.iterdir()))}"
        result = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out", str(out)])
        assert result.exit_code == 0, result.output
        return list(calls)
    return run


@covers("backend.kind")
def test_kind_qemu_launches_real_guests_and_simulated_does_not(launched):
    (call,) = launched(kind="qemu")
    assert call["names"] == ["web"] and call["memories_mib"] == [256]
    assert launched(kind="simulated") == []


@covers("backend.shared", "backend.private", "backend.touch")
def test_the_in_guest_workload_is_the_tables(launched):
    (call,) = launched(shared="48MiB", private="8MiB", touch="3s")
    w = call["workload"]
    assert (w.shared_mib, w.private_mib, w.touch_s) == (48, 8, 3)
    (default,) = launched()
    assert (default["workload"].shared_mib, default["workload"].private_mib,
            default["workload"].touch_s) == (64, 32, 5)


@covers("backend.file_backed")
def test_file_backed_puts_guest_ram_in_a_swappable_file(launched):
    (call,) = launched(file_backed="true")
    assert call["file_backed"] is True and call["swap_dir"] is not None
    (plain,) = launched()
    assert plain["file_backed"] is False and plain["swap_dir"] is None

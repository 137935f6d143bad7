"""The libvirt backend against a real libvirtd and a TCG domain.

One transient domain (384 MiB, the guest ``hvmem qemu image`` builds, a virtio
balloon with free page reporting and stats every 5 s) is booted through
``qemu:///system``. ``hvmem libvirt control`` runs over it in a child process
under a 300 MiB budget, where the ``proxmox`` policy balloons it, and must put
everything back on exit: the balloon, the stats period, KSM. Then a controller
is SIGKILLed with its balloon inflated, and ``hvmem libvirt restore`` must put
the same back. Under a 200 MiB budget the esx policy swaps it: a memtune
hard_limit where the host has swap, a refusal where it has none, and memtune as
it was afterwards. The domain is destroyed at the end (being transient, it is
gone). About 45 s, most of it the boot.

It needs root, QEMU, the guest image and a running libvirtd with the QEMU
driver; ``.ci/run`` starts one (``.ci/libvirtd``). Elsewhere it skips with the
reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

URI = "qemu:///system"
MEMORY_MIB = 384
STATS_PERIOD_S = 5
BOOT_TIMEOUT_S = 90.0
KSM = Path("/sys/kernel/mm/ksm")


def _unavailable() -> str | None:
    if os.environ.get("HVMEM_QEMU_TESTS") == "0":
        return "HVMEM_QEMU_TESTS=0 (it boots a QEMU guest)"
    try:
        import libvirt
    except ImportError:
        return "libvirt's Python binding is missing (apt-get install python3-libvirt)"
    if os.geteuid() != 0:
        return "not root (qemu:///system needs root)"
    from hvmem.backends.qemu.launcher import missing_tools

    if (why := missing_tools()) is not None:
        return why
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as err:
        return (f"no libvirtd answers on {URI} ({err.get_error_message()}); .ci/libvirtd "
                "starts one")
    return None


if (_why := _unavailable()) is not None:
    pytest.skip(f"libvirt integration test skipped: {_why}", allow_module_level=True)

import libvirt  # noqa: E402 -- only once the binding is known to be there


def domain_xml(name: str, image, log: Path) -> str:
    from hvmem.backends.qemu.guest_image import WorkloadParams

    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <currentMemory unit='MiB'>{MEMORY_MIB}</currentMemory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel><initrd>{image.initramfs}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet {WorkloadParams().kernel_args()}</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{log}'/><target port='0'/></serial>
    <memballoon model='virtio' autodeflate='on' freePageReporting='on'>
      <stats period='{STATS_PERIOD_S}'/></memballoon>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    from hvmem.backends.qemu.guest_image import build_image

    image = build_image(None)
    log = tmp_path_factory.mktemp("libvirt") / "serial.log"
    conn = libvirt.open(URI)
    name = f"hvmem-lv-{os.getpid()}"
    dom = conn.createXML(domain_xml(name, image, log), 0)
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while "HVMEM-READY" not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() < deadline, f"{name} did not boot in {BOOT_TIMEOUT_S} s"
            time.sleep(0.5)
        # The balloon driver's first stats, which the floor needs.
        while "usable" not in dom.memoryStats():
            assert time.monotonic() < deadline, f"{name} sent no balloon stats"
            time.sleep(0.5)
        yield dom
    finally:
        dom.destroy()
        conn.close()


def ksm_settings() -> dict[str, str]:
    return {n: (KSM / n).read_text() for n in ("run", "pages_to_scan", "sleep_millisecs")
            if (KSM / n).exists()}


def stats_period(dom) -> int:
    stats = ET.fromstring(dom.XMLDesc(0)).find("./devices/memballoon/stats")
    return int(stats.get("period")) if stats is not None else 0


def memory_back(dom, timeout_s: float = 15.0) -> bool:
    """Whether the domain's live memory returns to its full size (the guest deflates)."""
    deadline = time.monotonic() + timeout_s
    while dom.info()[2] != MEMORY_MIB * 1024:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def hvmem(*args: str) -> list[str]:
    return [sys.executable, "-m", "hvmem", "libvirt", *args]


def control_args(dom, tmp_path: Path) -> list[str]:
    return ["control", "--uri", URI, "--domain", dom.name(), "--policy", "proxmox",
            "--host-memory", "300MiB", "--interval", "2s", "--no-live",
            "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out")]


def test_control_balloons_the_domain_and_undoes_it_on_exit(domain, tmp_path):
    from hvmem.results import read_results

    ksm_before = ksm_settings()
    done = subprocess.run(hvmem(*control_args(domain, tmp_path), "--duration", "6s"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    vms = read_results(tmp_path / "out").vms.to_pandas()
    assert vms["MCTLTGT"].max() > 10  # MiB: planned ...
    assert vms["MCTLSZ"].max() > 10  # ... and the guest's driver took it
    assert memory_back(domain)  # given back on exit
    assert stats_period(domain) == STATS_PERIOD_S
    assert ksm_settings() == ksm_before
    assert not list((tmp_path / "state").glob("libvirt-*.json"))


def test_restore_after_sigkill(domain, tmp_path):
    ksm_before = ksm_settings()
    child = subprocess.Popen(hvmem(*control_args(domain, tmp_path)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while domain.info()[2] > (MEMORY_MIB - 10) * 1024:
            assert time.monotonic() < deadline, "the controller never inflated the balloon"
            time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (state,) = (tmp_path / "state").glob("libvirt-*.json")
    assert json.loads(state.read_text())["domains"][0]["stats_period_s"] == STATS_PERIOD_S
    assert domain.info()[2] < MEMORY_MIB * 1024  # left inflated by the killed controller
    done = subprocess.run(hvmem("restore", "--uri", URI, "--state-dir", str(tmp_path / "state")),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "balloon returned" in done.stdout
    assert memory_back(domain)
    assert stats_period(domain) == STATS_PERIOD_S
    assert ksm_settings() == ksm_before
    assert not state.exists()


def test_swapping_is_memtune_where_the_host_has_swap(domain, tmp_path):
    """In LOW the esx policy swaps: a hard_limit where the host has swap, else a refusal
    (QEMU would be OOM-killed); memtune is as it was once the controller exits."""
    from hvmem.backends.qemu.procfs import read_meminfo

    before = domain.memoryParameters()
    args = control_args(domain, tmp_path)
    args[args.index("proxmox")] = "esx"
    args[args.index("300MiB")] = "200MiB"
    done = subprocess.run(hvmem(*args, "--duration", "3s"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    kinds = [json.loads(line)["event"] for line in
             (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    has_swap = read_meminfo().swap_total_mib > 0
    assert ("swap_limit" if has_swap else "swap_refused") in kinds
    assert domain.memoryParameters() == before
    assert memory_back(domain)

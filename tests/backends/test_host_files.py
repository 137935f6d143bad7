"""The /proc, KSM and cgroup readers on fixture files (the real files need a live QEMU)."""

import pytest

from hvmem.backends.qemu.cgroups import MemoryCgroup, create_cgroup, memory_cgroup_of
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.procfs import find_pid_by_arg, read_meminfo, read_process
from hvmem.errors import BackendError

MIB = 1 << 20
SMAPS = """\
55d000000000-55d000800000 r-xp 00000000 08:01 1 /usr/bin/qemu-system-x86_64
Size:               8192 kB
Rss:                6000 kB
7f0000000000-7f0040000000 rwxp 00000000 00:00 0
Size:            1048576 kB
Rss:               30000 kB
7f1000000000-7f1018200000 rw-p 00000000 00:00 0
Size:             395264 kB
Rss:              204800 kB
7f2000000000-7f2018000000 rw-s 00000000 08:01 77 /var/tmp/vm1.vswp (deleted)
Size:             393216 kB
Rss:              102400 kB
"""


def proc_tree(tmp_path, pid=321, status="VmRSS:\t300000 kB\nRssAnon:\t250000 kB\n"):
    base = tmp_path / str(pid)
    base.mkdir(parents=True)
    (base / "status").write_text(status)
    (base / "smaps").write_text(SMAPS)
    (base / "stat").write_text(f"{pid} (qemu-system-x86 (x)) S " + "0 " * 10 + "250 50 0 0\n")
    return tmp_path


def test_anonymous_ram_mapping_is_matched_by_size_not_the_tcg_buffer(tmp_path):
    proc = proc_tree(tmp_path)
    p = read_process(321, 384, proc=proc)
    assert p.ram_rss_mib == 200 and p.ram_size_mib == pytest.approx(386)  # not the 1 GiB one
    assert p.cpu_ticks == 300 and p.overhead_mib == pytest.approx(300000 / 1024 - 200)
    assert p.ksm_merging_pages == 0  # no ksm file: no sharing known


def test_file_backed_ram_mapping_is_matched_by_path(tmp_path):
    p = read_process(321, 384, "/var/tmp/vm1.vswp", proc=proc_tree(tmp_path))
    assert p.ram_rss_mib == 100


def test_gone_process_and_meminfo(tmp_path):
    with pytest.raises(ProcessLookupError):
        read_process(999, 384, proc=tmp_path)
    (tmp_path / "meminfo").write_text("MemTotal: 2048 kB\nMemFree: 1024 kB\n")
    info = read_meminfo(tmp_path)
    assert (info.total_mib, info.free_mib, info.available_mib, info.swap_total_mib) == (
        2, 1, 1, 0)
    (tmp_path / "meminfo").write_text("nothing\n")
    with pytest.raises(BackendError, match="no MemTotal"):
        read_meminfo(tmp_path)


def test_find_pid_by_socket_in_qemu_command_line(tmp_path):
    for pid, argv in ((11, b"qemu-system-x86_64\0-qmp\0unix:/r/vm1.qmp,server=on\0"),
                      (12, b"vim\0/r/vm1.qmp\0"),
                      (13, b"qemu-system-x86_64\0-qmp\0unix:/r/vm2.qmp,server=on\0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(argv)
    assert find_pid_by_arg("/r/vm1.qmp", tmp_path) == 11
    assert find_pid_by_arg("/r/vm9.qmp", tmp_path) is None
    (tmp_path / "14").mkdir()
    (tmp_path / "14" / "cmdline").write_bytes(b"qemu-system-x86_64\0unix:/r/vm1.qmp\0")
    with pytest.raises(BackendError, match="several QEMU processes"):
        find_pid_by_arg("/r/vm1.qmp", tmp_path)


def test_cgroup_v2_files(tmp_path):
    root = tmp_path / "cg"
    (root / "hv" / "vm1").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    cg_dir = root / "hv" / "vm1"
    (cg_dir / "memory.max").write_text("max\n")
    (cg_dir / "memory.high").write_text("max\n")
    (cg_dir / "memory.current").write_text(f"{300 * MIB}\n")
    (cg_dir / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 0\n")
    (cg_dir / "memory.stat").write_text("anon 1\nworkingset_refault_file 12\n")
    (cg_dir / "cgroup.procs").write_text("321\n")
    proc = tmp_path / "proc"
    (proc / "321").mkdir(parents=True)
    (proc / "321" / "cgroup").write_text("0::/hv/vm1\n")
    cg = memory_cgroup_of(321, root, proc)
    assert cg == MemoryCgroup(cg_dir, 2)
    assert cg.limit_mib() is None and cg.usage_mib() == 300 and cg.failcnt() == 7
    assert cg.stat()["workingset_refault_file"] == 12 and cg.pids() == [321]
    cg.set_limit_mib(200)
    assert (cg_dir / "memory.max").read_text().strip() == str(200 * MIB)
    assert cg.limit_mib() == 200
    cg.set_limit_mib(None)
    assert (cg_dir / "memory.max").read_text().strip() == "max"
    (proc / "self").mkdir()
    (proc / "self" / "cgroup").write_text("0::/hv\n")
    assert create_cgroup("vm2", root, proc).path == root / "hv" / "vm2"


def test_cgroup_v1_and_no_memory_controller(tmp_path):
    root = tmp_path / "cg"
    (root / "memory" / "a").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    proc = tmp_path / "proc"
    (proc / "5").mkdir(parents=True)
    (proc / "5" / "cgroup").write_text("5:cpu:/\n4:memory:/a\n")
    assert memory_cgroup_of(5, root, proc) == MemoryCgroup(root / "memory" / "a", 1)
    (proc / "5" / "cgroup").write_text("4:memory:/\n")
    assert memory_cgroup_of(5, root, proc) is None  # the root cgroup is never limited
    with pytest.raises(BackendError, match="no memory cgroup controller"):
        create_cgroup("x", tmp_path / "empty", proc)


def test_ksm_reset_and_restore(tmp_path):
    for name, value in (("run", 0), ("pages_to_scan", 100), ("sleep_millisecs", 20),
                        ("pages_shared", 5), ("pages_sharing", 50), ("full_scans", 3)):
        (tmp_path / name).write_text(f"{value}\n")
    ksm = Ksm(tmp_path)
    assert ksm.available and ksm.counters().saved_mib == pytest.approx(50 * 4 / 1024)
    ksm.save()
    (tmp_path / "run").write_text("1\n")
    (tmp_path / "pages_to_scan").write_text("5000\n")
    ksm.reset_counters()  # writes 2, then the saved run
    assert (tmp_path / "run").read_text().strip() == "0"
    ksm.restore()
    assert (tmp_path / "pages_to_scan").read_text().strip() == "100"
    assert not Ksm(tmp_path / "none").available

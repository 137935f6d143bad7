import numpy as np
import pytest

from hvmem.guest.balloon_driver import BalloonDriver
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.balloon import BalloonHost
from hvmem.units import NS_PER_S


@pytest.fixture
def setup(make_guest):
    """``setup(driver_enabled=True, reporting=False)``: a booted 1000-page guest and its balloon."""
    return lambda driver_enabled=True, reporting=False: _setup(make_guest, driver_enabled,
                                                               reporting)


def _setup(make_guest, driver_enabled, reporting):
    g = make_guest(1000)
    host, vm, kernel = g.host, g.vm, g.kernel
    vm.back_pages(np.arange(1000))  # the guest has touched all its memory (boot)
    device = VirtioBalloon(free_page_reporting=reporting)
    driver = BalloonDriver(kernel, device, enabled=driver_enabled)
    return host, vm, kernel, device, driver, BalloonHost(vm, device)


def test_target_is_clamped_to_the_maximum_balloon(setup):
    _, _, _, _, _, balloon = setup()
    assert balloon.max_pages == 650
    assert balloon.set_target(900) == 650


def test_inflation_frees_frames_and_deflation_returns_pages(setup):
    host, vm, kernel, device, driver, balloon = setup()
    used = host.frames.n_used
    balloon.set_target(300)
    driver.poll(0)
    assert balloon.collect(0) == 300
    assert host.frames.n_used == used - 300
    assert vm.pmap.count(Backing.BALLOONED) == 300
    balloon.set_target(100)
    driver.poll(NS_PER_S)
    balloon.collect(NS_PER_S)
    assert vm.pmap.count(Backing.BALLOONED) == 100
    assert balloon.counters.deflated == 200
    host.check_invariants()
    kernel.check_invariants()


def test_a_driver_that_never_inflates_is_stuck(setup):
    _, _, _, _, driver, balloon = setup(driver_enabled=False)
    balloon.set_target(300)
    for t in range(20):
        driver.poll(t * NS_PER_S)
        balloon.collect(t * NS_PER_S)
    assert balloon.stuck and balloon.counters.stuck_events == 1
    assert balloon.shortfall_pages == 300


def test_reported_free_pages_lose_their_backing(setup):
    host, vm, kernel, device, driver, balloon = setup(reporting=True)
    used = host.frames.n_used
    driver.report_free_pages()
    driver.report_free_pages()
    freed = balloon.collect(0)
    assert freed > 0 and host.frames.n_used == used - freed
    assert vm.pmap.count(Backing.UNBACKED) >= freed
    host.check_invariants()

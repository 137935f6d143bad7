"""HVMEM_REQUIRE_INTEGRATION: skipped integration tests fail the run (hooks in conftest.py).

Each test runs pytest on a small suite in a scratch directory with this
project's conftest.py, once with the variable set and once without, and reads
the outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

SUITE = {
    "test_items": '''
import pytest

pytestmark = pytest.mark.integration

@pytest.fixture(scope="session")
def guest():
    pytest.skip("no guest image here")

def test_skips_in_its_body():
    pytest.skip("no QEMU here")

@pytest.mark.skipif(True, reason="not root")
def test_skipped_by_a_mark():
    pass

def test_skips_in_a_fixture(guest):
    pass

def test_runs():
    pass

@pytest.mark.xfail(reason="known to fail", strict=True)
def test_expected_to_fail():
    assert False
''',
    "test_whole_module": '''
import pytest

pytestmark = [pytest.mark.integration]
pytest.skip("no libvirt here", allow_module_level=True)

def test_never_collected():
    pass
''',
    "test_plain": '''
import pytest

pytest.skip("an ordinary module skipped whole", allow_module_level=True)
''',
    "test_unmarked": '''
import pytest

def test_ordinary_skip():
    pytest.skip("an ordinary skip")

@pytest.mark.integration
def test_marked_alone():
    pytest.skip("no browser here")
''',
}
INI = '''[pytest]
markers =
    integration: needs real guests
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(INI)
    pytester.makepyfile(**SUITE)
    return pytester


def run(suite: pytest.Pytester, monkeypatch, value: str | None, *args: str):
    if value is None:
        monkeypatch.delenv("HVMEM_REQUIRE_INTEGRATION", raising=False)
    else:
        monkeypatch.setenv("HVMEM_REQUIRE_INTEGRATION", value)
    return suite.runpytest("-rA", "-p", "no:cacheprovider", *args)


def test_without_the_variable_skips_stay_skips(suite, monkeypatch):
    result = run(suite, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=7, xfailed=1)
    assert result.ret == 0


def test_zero_means_not_required(suite, monkeypatch):
    run(suite, monkeypatch, "0").assert_outcomes(passed=1, skipped=7, xfailed=1)


def test_required_integration_skips_fail_with_their_reason(suite, monkeypatch):
    result = run(suite, monkeypatch, "1")
    # Failing: the three integration skips of test_items (in its body; by a mark and
    # in a fixture, both in setup, so pytest calls them errors), the marked test of
    # test_unmarked, and the integration module skipped whole. The rest as before.
    result.assert_outcomes(passed=1, failed=3, errors=2, skipped=2, xfailed=1)
    assert result.ret != 0
    message = "integration test skipped under HVMEM_REQUIRE_INTEGRATION=1: "
    for header, reason in (("*ERROR at setup of test_skipped_by_a_mark*", "not root"),
                           ("*ERROR at setup of test_skips_in_a_fixture*", "no guest image here"),
                           ("*_ test_skips_in_its_body _*", "no QEMU here"),
                           ("*_ test_marked_alone _*", "no browser here"),
                           ("*_ module (skipped at collection) _*", "no libvirt here")):
        result.stdout.fnmatch_lines([header, message + reason], consecutive=True)
    result.stdout.fnmatch_lines_random([
        "SKIPPED * an ordinary skip",
        "SKIPPED * an ordinary module skipped whole",
        "PASSED test_items.py::test_runs",
        "XFAIL test_items.py::test_expected_to_fail*",
        "FAILED test_whole_module.py::module*",
    ])


def test_deselecting_integration_tests_leaves_nothing_to_fail(suite, monkeypatch):
    result = run(suite, monkeypatch, "1", "-m", "not integration")
    result.assert_outcomes(skipped=2, deselected=7)
    assert result.ret == 0

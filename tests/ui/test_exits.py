"""One error wrapper for every command: hvmem's and the OS's errors as one line and exit 1."""

import pytest
import typer
from typer.testing import CliRunner

from hvmem.errors import ConfigError
from hvmem.ui.exits import ExitStatus, user_errors


def run(error: BaseException) -> tuple[int, str]:
    app = typer.Typer()

    @app.command()
    @user_errors
    def fail() -> None:
        raise error

    result = CliRunner().invoke(app, [])
    return result.exit_code, result.output


@pytest.mark.parametrize(("error", "line"), [
    (ConfigError("s.toml: vm[0].memory: expected a size, found 'lots'"),
     "hvmem: error: s.toml: vm[0].memory: expected a size, found 'lots'"),
    (FileNotFoundError(2, "No such file or directory", "trace.txt"),
     "hvmem: error: trace.txt: No such file or directory"),
    (PermissionError(13, "Permission denied"), "hvmem: error: Permission denied"),
])
def test_errors_end_in_one_line_and_status_1(error, line):
    code, output = run(error)
    assert code == ExitStatus.ERROR == 1
    assert output.strip().splitlines() == [line]


def test_other_exceptions_are_bugs_and_propagate():
    app = typer.Typer()

    @app.command()
    @user_errors
    def fail() -> None:
        raise KeyError("bug")

    result = CliRunner().invoke(app, [])
    assert isinstance(result.exception, KeyError)


def test_a_signal_outside_a_run_ends_the_command_with_its_status():
    import signal

    from hvmem.ui.exits import Stopped

    code, output = run(Stopped(signal.SIGTERM))
    assert code == 143 and output.strip() == "hvmem: stopped by SIGTERM"
    code, output = run(Stopped(signal.SIGHUP))
    assert code == 129 and output.strip() == "hvmem: stopped by SIGHUP"

"""Every expected failure is one line and its exit code; anything else is reported as a bug, never as a usage
error."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from core.cli import DEBUG_ENV, EXIT_BUG, EXIT_USAGE, clean_errors
from core.errors import BusyError, InputError, ModelMismatchError, StoreError, TokenDirectError, UsageError


def run(failure: BaseException, env: dict | None = None):
    app = typer.Typer()

    @app.command()
    @clean_errors
    def fails() -> None:
        raise failure

    return CliRunner().invoke(app, [], env=env or {})


@pytest.mark.parametrize("error", [UsageError, InputError, StoreError, ModelMismatchError, BusyError])
def test_an_expected_failure_is_its_message_on_one_line_and_exit_2(error):
    result = run(error("the collection 'pages' is in use"))
    assert result.exit_code == EXIT_USAGE
    assert result.output.strip().splitlines() == ["error: the collection 'pages' is in use"]
    assert issubclass(error, TokenDirectError)


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("bad value"), KeyError("x")])
def test_anything_else_is_a_bug_on_one_line_with_the_way_to_its_traceback(bug):
    result = run(bug)
    assert result.exit_code == EXIT_BUG != EXIT_USAGE
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: unexpected failure, a bug: {type(bug).__name__}") and DEBUG_ENV in line


def test_the_debug_setting_lets_the_traceback_through():
    result = run(ZeroDivisionError("division by zero"), env={DEBUG_ENV: "1"})
    assert isinstance(result.exception, ZeroDivisionError)

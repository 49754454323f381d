"""What every command of the command line shares: settings, output, and turning failures into exit codes.

Exit codes: 0 all done; 1 some inputs failed (the rest done, each failure named); 2 usage or configuration error,
or an expected failure (one line on stderr); 3 an unexpected failure, a bug (one line; TOKENDIRECT_DEBUG=1 shows the
traceback). Results go to stdout (one JSON document with --json); progress and logs to stderr.
"""

from __future__ import annotations

import functools
import json
import os

import typer

from config import Settings
from core.errors import TokenDirectError, first_line

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
DEBUG_ENV = "TOKENDIRECT_DEBUG"


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def clean_errors(fn):
    """Expected failures become their one-line message and exit code; anything else is reported as a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import click
        from pydantic import ValidationError

        try:
            return fn(*args, **kwargs)
        except (
            typer.Exit,
            typer.Abort,
            click.exceptions.Exit,
            click.exceptions.ClickException,
            click.exceptions.Abort,
        ):
            raise  # the command line's own way out
        except TokenDirectError as exc:
            fail(str(exc), exc.exit_code)
        except ValidationError as exc:
            err = exc.errors()[0]
            fail(f"invalid setting TOKENDIRECT_{str(err['loc'][0]).upper()}: {err['msg']}")
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(
                f"unexpected failure, a bug: {type(exc).__name__}: {first_line(exc)} "
                f"(set {DEBUG_ENV}=1 to see the traceback)",
                EXIT_BUG,
            )

    return wrapper


def settings() -> Settings:
    return Settings()


def emit(as_json: bool, data, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text)


def run_one(command, name: str) -> None:
    """`python -m NAME ...`: one command, its arguments straight after the module."""
    app = typer.Typer(add_completion=False)
    app.command(name)(command)
    app(prog_name=f"python -m {name}")

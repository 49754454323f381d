"""What every command of the command line shares: settings, output, and turning failures into exit codes.

Exit codes: 0 all done; 1 some inputs failed (the rest done, each failure named); 2 usage or configuration error,
or an expected failure (one line on stderr); 3 an unexpected failure, a bug (one line; TOKENDIRECT_DEBUG=1 shows the
traceback); 130 interrupted (Ctrl-C). Results go to stdout (one JSON document with --json, a refused run's too:
`{"error": ..., "exit_code": ...}`); progress and logs to stderr.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import typer

from config import Settings
from core.errors import EXIT_BUG, EXIT_INTERRUPTED, TokenDirectError, first_line, printable

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
DEBUG_ENV = "TOKENDIRECT_DEBUG"


def fail(message: str, code: int = EXIT_USAGE, as_json: bool = False, details: dict | None = None) -> None:
    """End the command with `message` on one line of stderr and exit code `code`; with --json, stdout still gets
    one JSON document, the error's."""
    if as_json:
        typer.echo(json.dumps({"error": message, "exit_code": code, **(details or {})}, indent=2, ensure_ascii=False))
    typer.echo(f"error: {printable(message)}", err=True)  # one line, whatever file names it holds
    raise typer.Exit(code)


def clean_errors(fn):
    """Expected failures become their one-line message and exit code; anything else is reported as a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import click
        from pydantic import ValidationError

        as_json = bool(kwargs.get("as_json"))
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
            fail(str(exc), exc.exit_code, as_json, exc.details)
        except ValidationError as exc:
            fail(setting_error(exc), EXIT_USAGE, as_json)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED, as_json)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            fail(
                f"unexpected failure, a bug: {type(exc).__name__}: {first_line(exc)} "
                f"(set {DEBUG_ENV}=1 to see the traceback)",
                EXIT_BUG,
                as_json,
            )

    return wrapper


def setting_error(exc) -> str:
    """A pydantic validation error of the settings as one line that names each variable: `TOKENDIRECT_TOP_K must be
    at least 1`."""
    return "; ".join(_setting_problem(err) for err in exc.errors())


_RULES = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "literal_error": "must be one of: {expected}",
}


def _setting_problem(err: dict) -> str:
    name = "TOKENDIRECT_" + str(err["loc"][0] if err.get("loc") else "?").upper()
    ctx = dict(err.get("ctx") or {})
    if err["type"] == "literal_error":
        ctx["expected"] = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
    rule = _RULES.get(err["type"])
    if rule is not None:
        try:
            return f"{name} {rule.format(**ctx)} (it is {err.get('input')!r})"
        except KeyError:
            pass
    message = str(ctx.get("error") or err["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"


def settings() -> Settings:
    return Settings()


def emit(as_json: bool, data, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else text)


def run_app(app: typer.Typer, prog_name: str) -> None:
    """Run the command line. With --json, a usage error the command line itself finds (a bad option value, a
    missing argument) also prints a JSON error document."""
    if "--json" not in sys.argv[1:]:
        app(prog_name=prog_name)
        return
    try:
        code = app(prog_name=prog_name, standalone_mode=False)
    except typer.TyperException as exc:  # the command line's own usage errors (typer's click)
        typer.echo(json.dumps({"error": exc.format_message(), "exit_code": exc.exit_code}, indent=2))
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo(json.dumps({"error": "interrupted", "exit_code": EXIT_INTERRUPTED}, indent=2))
        typer.echo("error: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)


def run_one(command, name: str) -> None:
    """`python -m NAME ...`: one command, its arguments straight after the module."""
    app = typer.Typer(add_completion=False)
    app.command(name)(command)
    run_app(app, f"python -m {name}")

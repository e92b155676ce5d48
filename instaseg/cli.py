"""The ``instaseg`` command line. Each area registers its own commands (``<area>/commands.py``);
heavy imports happen inside command bodies so ``instaseg --help`` stays fast."""

from __future__ import annotations

import sys

import click
import typer

from instaseg.errors import InstasegError

app = typer.Typer(
    name="instaseg",
    help="Instance segmentation: data, training, evaluation, prediction, serving and export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    from instaseg.data import commands as data_cmds
    from instaseg.evaluation import commands as eval_cmds
    from instaseg.export import commands as export_cmds
    from instaseg.predict import commands as predict_cmds
    from instaseg.serve import annotate_commands
    from instaseg.serve import commands as serve_cmds

    for module in (predict_cmds, eval_cmds, serve_cmds, export_cmds, data_cmds):
        module.register(app)
    annotate_commands.register(app)


@app.callback()
def _root() -> None:
    """instaseg: instance segmentation from your annotated data to a served, exported model."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. User errors print one line: ``instaseg: error: ...``."""
    _register_all()
    command = typer.main.get_command(app)
    # typer >= 0.29 vendors its own click (typer._click): catch its exceptions as well as click's.
    try:
        from typer._click.exceptions import ClickException as TyperClickException
    except ImportError:
        TyperClickException = click.ClickException
    click_errors = (click.ClickException, TyperClickException)
    aborts = (click.exceptions.Abort, typer.Abort)
    try:
        rv = command.main(args=argv, prog_name="instaseg", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except click_errors as exc:
        exc.show()
        return exc.exit_code
    except aborts:
        print("instaseg: aborted", file=sys.stderr)
        return 1
    except InstasegError as exc:
        print(f"instaseg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("instaseg: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) else 0  # typer returns a raised typer.Exit's code here


if __name__ == "__main__":
    sys.exit(main())

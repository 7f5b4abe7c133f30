"""The ``latentgap`` command: thin wrappers that parse options and call one library function each.

Each command group lives in its own module below and registers on :data:`app`. User errors
(:class:`latentgap.errors.UserError`) are printed as one line and exit with code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import UserError

app = typer.Typer(
    name="latentgap",
    help="Measure the learnability gap of an autoencoder's latent space on your medical dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # joins wrapped docstring lines into paragraphs
)

# One module per command group; each registers its commands on `app` when imported.
_COMMAND_MODULES: list[str] = ["data", "ae", "encode", "train", "synth", "seg", "study", "report", "bench", "probe"]

for _mod in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_mod}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``latentgap`` console script."""
    try:
        # outside standalone mode click returns a command's exit status (typer.Exit) instead of exiting
        status = app(args=argv, standalone_mode=False)
    except UserError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a re-run resumes from it", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
    if isinstance(status, int) and status != 0:
        sys.exit(status)


if __name__ == "__main__":
    main()

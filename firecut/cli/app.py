"""The `firecut` command line: a thin shell over the library.

Heavy imports (torch, torchvision, optuna) happen inside commands, so `firecut --help` stays fast.
Results go to stdout; progress and diagnostics to stderr. An error the user can fix is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from firecut.cli import bench, export, prune, search, train
from firecut.errors import FirecutError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Spiking SqueezeNet: train CNNs and SNNs, prune Fire modules, count AC/MAC and energy.",
    epilog="Example: firecut train --preset quick --dataset cifar10 --cnn --out runs/cnn",
)
schedules_app = typer.Typer(no_args_is_help=True, help="Fire-module schedules: list, show, validate, generate.")
app.add_typer(schedules_app, name="schedules")

# The commands, in the order `firecut --help` lists them.
COMMANDS = [train.train, train.evaluate, train.models, prune.ablate, search.search, bench.benchmark,
            bench.report, prune.saliency, export.export, export.predict, prune.schedules_list,
            prune.schedules_show, prune.schedules_validate, prune.schedules_generate]
for fn in COMMANDS:
    group = schedules_app if fn.cli["group"] == "schedules" else app
    group.command(fn.cli["name"], epilog=fn.cli["epilog"])(fn)


def _version(value: bool) -> None:
    if value:
        import firecut

        print(f"firecut {firecut.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Spiking SqueezeNet: train CNNs and SNNs, prune Fire modules, count AC/MAC and energy."""


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (a scheduler's preemption, `kill`) stops a run the way Ctrl-C does: cleanly."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        code = app(standalone_mode=False)  # usage errors come back here, to be said in one line
        sys.exit(code if isinstance(code, int) else 0)
    except typer.TyperException as e:  # Click's UsageError family: an unknown option, a bad value
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `firecut` / `firecut schedules`: help
            e.show()
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        print(f"firecut: error: {message}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C while Click itself was reading input
        print("firecut: interrupted", file=sys.stderr)
        sys.exit(130)
    except FirecutError as e:
        print(f"firecut: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, RuntimeError) as e:  # a write the library did not make atomically
        from firecut.errors import write_errno, write_error

        code = write_errno(e)
        if code is None:
            raise
        where = getattr(e, "filename", None) or "a file firecut was writing"
        print(f"firecut: error: {write_error(where, code)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (typer turns one inside into exit 130)
        print("firecut: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

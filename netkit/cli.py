"""The ``netkit`` command: the root Typer app, and the ONE place that maps errors to exit codes."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from netkit import __version__
from netkit.errors import (
    BindError,
    CheckFailed,
    ConnectError,
    ConnectionLost,
    LocalError,
    NetkitError,
    OperationTimeout,
    PeerProtocolError,
    TLSError,
    UsageError,
)
from netkit.net import loop_choice
from netkit.status import ExitStatus

COMMANDS = {
    "ws-server": "ws_server",
    "proxy": "proxy",
    "lb": "lb",
    "tcp-echo": "tcp_echo",
    "udp-echo": "udp_echo",
    "bench": "bench",
    "multicast": "multicast",
    "ws-client": "ws_client",
}
"""Every subcommand, in the order ``netkit --help`` lists them, and its module in
``netkit.commands``. A command's module is imported only when that command is asked for:
``--version``, and a run of one command, load nothing else (each module imports what its
command needs, bench's driver and rich's live view among the largest)."""


class LazyGroup(TyperGroup):
    """The root group: resolves a subcommand by importing its module only then."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else None


_loaded: dict[str, click.Command] = {}


def load_command(name: str) -> click.Command:
    """The click command for a subcommand of :data:`COMMANDS` (its module's ``app``)."""
    command = _loaded.get(name)
    if command is None:
        module = importlib.import_module(f"netkit.commands.{COMMANDS[name]}")
        # A one-command app (ws-server, proxy, lb, ws-client) becomes that command; an app
        # with several (tcp-echo serve/client) a group.
        command = _loaded[name] = typer.main.get_command(module.app)
        command.name = name
    return command


app = typer.Typer(
    name="netkit",
    cls=LazyGroup,
    help="One toolbox for network work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"netkit {__version__} (event loop: {loop_choice.loop_name()})")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
    loop: Annotated[
        str,
        typer.Option(
            "--loop",
            help="Event loop: auto (uvloop when installed), uvloop or asyncio.",
            click_type=click.Choice(loop_choice.LOOP_CHOICES),
        ),
    ] = "auto",
) -> None:
    """netkit: one toolbox for network work. Endpoints are HOST:PORT, [::1]:PORT, unix:/path or URLs."""
    global _debug
    _debug = debug
    loop_choice.set_loop(loop)


# Which exit code each error class gets; the first matching row wins.
EXIT_CODES: list[tuple[type[BaseException], ExitStatus]] = [
    (UsageError, ExitStatus.USAGE),
    (CheckFailed, ExitStatus.CHECK_FAILED),
    (TLSError, ExitStatus.TLS_ERROR),
    (OperationTimeout, ExitStatus.TIMEOUT),
    (ConnectError, ExitStatus.CONNECTION_FAILED),
    (ConnectionLost, ExitStatus.CONNECTION_FAILED),
    (BindError, ExitStatus.BIND_FAILED),
    (LocalError, ExitStatus.BIND_FAILED),
    (PeerProtocolError, ExitStatus.PROTOCOL_ERROR),
    (NetkitError, ExitStatus.INTERNAL_ERROR),
]


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The exit code for an error (INTERNAL_ERROR for anything unexpected)."""
    for kind, status in EXIT_CODES:
        if isinstance(exc, kind):
            return status
    return ExitStatus.INTERNAL_ERROR


def _report(message: str, status: ExitStatus) -> None:
    from netkit.console import active_output

    out = active_output()
    if out is not None and out.json:
        out.event("error", None, message=message, exit_code=int(status))
    print(f"netkit: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run netkit; returns the exit code (see :mod:`netkit.status`)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="netkit", standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitStatus.SUCCESS
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "netkit"
        print(f"{where}: error: {exc.format_message()} (see '{where} --help')", file=sys.stderr)
        return ExitStatus.USAGE
    except (click.exceptions.Abort, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    except NetkitError as exc:
        if debug or _debug:
            raise
        from netkit.commands.options import flag_name  # loaded by every command that raises

        status = exit_status_for(exc)
        message, hint = exc.describe(flag_name)
        message += f" ({hint})" if hint else ""
        _report(message, status)
        return status
    except BrokenPipeError:
        return ExitStatus.SUCCESS
    except Exception as exc:
        if debug or _debug:
            raise
        _report(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)",
            ExitStatus.INTERNAL_ERROR,
        )
        return ExitStatus.INTERNAL_ERROR

"""The CLI as plain data: every command, argument and option, read from click's command objects.

The man pages and the shell completions are both rendered from this model, so they cover
exactly what ``netkit --help`` covers. Nothing here renders help text through rich or reads
the terminal, so the output does not depend on who runs it or where.
"""

from __future__ import annotations

import ast
import enum
import inspect
from dataclasses import dataclass, field

import click
import typer
from rich.text import Text

# typer's own options on the root command: kept in the model (they work), described as typer does.
DEFAULT_PANEL = "Options"
ARGUMENTS_PANEL = "Arguments"


@dataclass(frozen=True)
class Param:
    """One argument or option, with what the docs and completions need to know about it."""

    name: str
    is_option: bool
    opts: tuple[str, ...]
    secondary_opts: tuple[str, ...]
    help: str
    metavar: str | None
    choices: tuple[str, ...]
    files: bool
    multiple: bool
    required: bool
    default: str | None
    range: str | None
    panel: str

    @property
    def takes_value(self) -> bool:
        """True when the option reads the next word as its value (flags do not)."""
        return self.is_option and self.metavar is not None

    @property
    def all_opts(self) -> tuple[str, ...]:
        """Every spelling: ``--splice`` and ``--no-splice``, ``-c`` and ``--count``."""
        return self.opts + self.secondary_opts


@dataclass
class Command:
    """A command or a group of commands."""

    path: tuple[str, ...]
    help: str
    short_help: str
    epilog: str
    params: list[Param]
    subcommands: list[Command] = field(default_factory=list)
    default_subcommand: str | None = None

    @property
    def name(self) -> str:
        """The command line that runs it: ``netkit tcp-echo serve``."""
        return " ".join(self.path)

    @property
    def options(self) -> list[Param]:
        return [p for p in self.params if p.is_option]

    @property
    def arguments(self) -> list[Param]:
        return [p for p in self.params if not p.is_option]

    def walk(self) -> list[Command]:
        """This command and every command under it, depth first, in --help order."""
        found = [self]
        for sub in self.subcommands:
            found += sub.walk()
        return found

    def usage(self) -> str:
        """``[OPTIONS] ENDPOINT [MESSAGES]...`` for a command, ``COMMAND [ARGS]...`` for a group."""
        if self.subcommands:
            return "[OPTIONS] COMMAND [ARGS]..."
        words = ["[OPTIONS]"]
        for arg in self.arguments:
            word = arg.metavar or arg.name.upper()
            word += "..." if arg.multiple else ""
            words.append(word if arg.required else f"[{word}]")
        return " ".join(words)


def _text(value: str | None) -> str:
    """Help text as ``--help`` shows it: typer reads it as rich markup, so ``\\[`` is ``[``.

    Parsing the markup is not rendering: the result does not depend on the terminal.
    """
    return Text.from_markup(inspect.cleandoc(value)).plain if value else ""


def _range(kind: object) -> str | None:
    if not isinstance(kind, click.types._NumberRangeBase):
        return None
    low, high = kind.min, kind.max
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"{'more than' if kind.min_open else 'at least'} {low}"
    if high is not None:
        return f"{'less than' if kind.max_open else 'at most'} {high}"
    return None


def _default(param: click.Parameter) -> str | None:
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if show is False:
        return None
    value = param.default
    if callable(value) or value is None or value in ((), [], ""):
        return None  # nothing to show ("Default: ." otherwise); --help shows none either
    if isinstance(param, click.Option) and param.is_flag:
        if not param.secondary_opts:
            return None  # a plain flag is off unless given
        return param.opts[0] if value else param.secondary_opts[0]
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _metavar(param: click.Parameter) -> str | None:
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return None
    if param.metavar:
        return param.metavar
    kind = param.type
    if isinstance(kind, click.Choice):
        return "|".join(str(c) for c in kind.choices)
    if not isinstance(param, click.Option):
        return (param.name or "ARG").upper()
    if isinstance(kind, click.Path | click.File):
        return "FILE"
    if isinstance(kind, click.types.IntParamType):
        return "N"
    if isinstance(kind, click.types.FloatParamType):
        return "NUMBER"
    return (param.name or "VALUE").strip("_").upper().replace("_", "-")


def _param(param: click.Parameter) -> Param:
    is_option = isinstance(param, click.Option)
    kind = param.type
    panel = getattr(param, "rich_help_panel", None)
    return Param(
        name=param.name or "",
        is_option=is_option,
        # Sorted (short before long): click builds the help option's names from a set, whose
        # order changes with hash randomisation, and the output must not.
        opts=tuple(sorted(param.opts, key=lambda o: (o.startswith("--"), o))) if is_option else (),
        secondary_opts=tuple(param.secondary_opts) if is_option else (),
        help=_text(getattr(param, "help", None)),
        metavar=_metavar(param),
        choices=tuple(str(c) for c in kind.choices) if isinstance(kind, click.Choice) else (),
        files=isinstance(kind, click.Path | click.File),
        multiple=bool(getattr(param, "multiple", False)) or param.nargs == -1,
        required=param.required,
        default=_default(param),
        range=_range(kind),
        panel=panel or (DEFAULT_PANEL if is_option else ARGUMENTS_PANEL),
    )


def _command(cmd: click.Command, ctx: click.Context) -> Command:
    params = [_param(p) for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    help_text = _text(cmd.help)
    node = Command(
        path=tuple(ctx.command_path.split()),
        help=help_text,
        short_help=_text(cmd.short_help) or (help_text.split("\n\n")[0] if help_text else ""),
        epilog=_text(cmd.epilog),
        params=params,
    )
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
            node.subcommands.append(_command(sub, sub_ctx))
        node.default_subcommand = getattr(cmd, "default_command", None)
    return node


def load_cli() -> Command:
    """The whole CLI as a tree of :class:`Command`, root first."""
    from netkit import cli

    root = typer.main.get_command(cli.app)
    return _command(root, click.Context(root, info_name="netkit", **root.context_settings))


@dataclass(frozen=True)
class ExitCode:
    """One exit status, as ``netkit/status.py`` documents it."""

    code: int
    name: str
    doc: str


def load_exit_codes() -> tuple[str, list[ExitCode]]:
    """The ExitStatus enum's docstring and its members' docstrings, read from the source.

    Attribute docstrings are not kept at run time, so the module is parsed; the values come
    from the enum itself, so a docstring can never be paired with the wrong number.
    """
    from netkit import status

    tree = ast.parse(inspect.getsource(status))
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == status.ExitStatus.__name__
    )
    docs: dict[str, str] = {}
    for stmt, after in zip(cls.body, [*cls.body[1:], None], strict=True):
        if (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.targets[0], ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.targets[0].id] = " ".join(inspect.cleandoc(after.value.value).split())
    intro = " ".join(inspect.cleandoc(status.ExitStatus.__doc__ or "").split("\n\n")[-1].split())
    codes = [ExitCode(int(m), m.name, docs.get(m.name, "")) for m in status.ExitStatus]
    missing = [c.name for c in codes if not c.doc]
    if missing:
        raise SystemExit(f"gendocs: netkit/status.py: no docstring for {', '.join(missing)}")
    return intro, codes

"""Man pages (roff, ``man(7)`` macros) from the CLI model plus hand-written sections.

The hand-written sections live in ``tools/mansrc/*.md`` in a small Markdown subset:

- ``# TITLE`` starts a section (``.SH``), ``## Title`` a subsection (``.SS``);
- a paragraph is lines separated by a blank line;
- ``- item`` lines are a bullet list;
- a block whose first line starts with ``: `` is a tagged paragraph (``.TP``): the rest of that
  line is the tag, the following lines the body;
- a fenced block (three backquotes) is an example, printed as is;
- inline: backquotes for literal text (bold), ``*word*`` for a placeholder (italic).

Everything is ASCII roff: other characters become ``\\[uXXXX]`` escapes, so ``groff`` needs no
preconv and warns about nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cli_model import Command, ExitCode, Param

MANUAL = "netkit manual"
# Options and their values in text: the hyphens are minus signs, so copied text still works.
_OPTION = re.compile(r"(?<![\w\\-])(--?[A-Za-z0-9][\w.-]*)")


def _chars(text: str) -> str:
    """Backslashes and non-ASCII characters as roff escapes."""
    text = text.replace("\\", "\\e")
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def _literal(text: str) -> str:
    """Text to be typed as is (code, commands): every hyphen a minus."""
    return _chars(text).replace("-", "\\-")


def inline(text: str) -> str:
    """Prose to roff: escapes, ``code`` in bold, ``*name*`` in italics, options with minus signs."""
    out: list[str] = []
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append(f"\\fB{_literal(part)}\\fR")
            continue
        part = _chars(part)
        part = _OPTION.sub(lambda m: m.group(1).replace("-", "\\-"), part)
        part = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"\\fI\1\\fR", part)
        out.append(part)
    return "".join(out)


def _line(text: str) -> str:
    """One line of roff input: a leading '.' or "'" would be read as a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _quote(text: str) -> str:
    """A macro argument in double quotes."""
    return '"' + text.replace('"', "\\(dq") + '"'


@dataclass
class Section:
    """A hand-written ``.SH`` section, already converted to roff lines."""

    title: str
    lines: list[str] = field(default_factory=list)


def markdown_to_roff(text: str, source: str) -> list[Section]:
    """Convert a ``tools/mansrc`` file into sections (see the module docstring for the syntax)."""
    sections: list[Section] = []
    lines = text.splitlines()
    i = 0

    def emit(*roff: str) -> None:
        if not sections:
            raise SystemExit(f"gendocs: {source}: text before the first '# SECTION' heading")
        sections[-1].lines.extend(roff)

    while i < len(lines):
        line = lines[i]
        if line.startswith("<!--"):  # a note for whoever edits the file
            while "-->" not in lines[i]:
                i += 1
            i += 1
            continue
        if line.startswith("# "):
            sections.append(Section(line[2:].strip()))
            i += 1
        elif line.startswith("## "):
            emit(f".SS {_quote(inline(line[3:].strip()))}")
            i += 1
        elif line.startswith("```"):
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise SystemExit(f"gendocs: {source}: unterminated ``` block")
            i += 1
            emit(".PP", ".EX", *(_line(_literal(b)) for b in body), ".EE")
        elif not line.strip():
            i += 1
        else:
            block: list[str] = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "```")):
                block.append(lines[i])
                i += 1
            if block[0].startswith("- "):
                items: list[list[str]] = []
                for b in block:
                    if b.startswith("- "):
                        items.append([b[2:]])
                    else:
                        items[-1].append(b.strip())
                for item in items:
                    emit(".IP \\(bu 2", _line(inline(" ".join(item))))
            elif block[0].startswith(": "):
                tags = [b for b in block if b.startswith(": ")]
                if len(tags) > 1:
                    raise SystemExit(f"gendocs: {source}: separate ': tag' blocks by a blank line")
                body_text = " ".join(b.strip() for b in block[1:])
                emit(".TP", _line(inline(block[0][2:].strip())), _line(inline(body_text)))
            else:
                emit(".PP", _line(inline(" ".join(b.strip() for b in block))))
    return sections


def _paragraphs(text: str) -> list[str]:
    """Help text (click style: paragraphs separated by blank lines) to roff paragraphs."""
    lines: list[str] = []
    for para in text.split("\n\n"):
        if not para.strip():
            continue
        if para.startswith("\b\n"):  # click: do not rewrap
            lines += [".PP", ".nf", *(_line(inline(p)) for p in para[2:].splitlines()), ".fi"]
        else:
            lines += [".PP", _line(inline(" ".join(para.split())))]
    return lines


def _option_tag(param: Param) -> str:
    names = sorted(param.opts, key=lambda o: o.startswith("--"))  # -c, --count
    tag = ", ".join(f"\\fB{_literal(n)}\\fR" for n in names)
    if param.secondary_opts:
        tag += ", " + ", ".join(f"\\fB{_literal(n)}\\fR" for n in param.secondary_opts)
    if param.metavar:
        tag += f" \\fI{_chars(param.metavar)}\\fR"
    return tag


def _param_body(param: Param) -> str:
    text = " ".join(param.help.split())
    facts: list[str] = []
    if param.choices and not param.is_option:
        facts.append("One of: " + ", ".join(f"`{c}`" for c in param.choices) + ".")
    if param.range:
        facts.append(f"Range: {param.range}.")
    if param.multiple and param.is_option and "repeatable" not in text.lower():
        facts.append("Repeatable.")
    if param.default is not None:
        facts.append(f"Default: `{param.default}`.")
    if not text and not param.is_option:
        text = "Optional." if not param.required else "Required."
        if param.multiple:
            text = "One or more." if param.required else "Zero or more."
    return " ".join(p for p in [text, *facts] if p)


def _params(command: Command) -> list[str]:
    """Arguments, then options: each help panel (Options, TLS, ...) a subsection."""
    out: list[str] = []
    panels: dict[str, list[Param]] = {}
    for p in command.arguments + command.options:
        panels.setdefault(p.panel, []).append(p)
    for panel, params in panels.items():
        if len(panels) > 1:
            out.append(f".SS {_quote(inline(panel))}")
        for p in params:
            if p.is_option:
                tag = _option_tag(p)
            else:
                tag = f"\\fI{_chars(p.metavar or p.name.upper())}\\fR" + (
                    "..." if p.multiple else ""
                )
            out += [".TP", _line(tag), _line(inline(_param_body(p)))]
    return out


def _synopsis(command: Command) -> list[str]:
    lines = [".nf"]
    leaves = [c for c in command.walk() if not c.subcommands] if command.subcommands else [command]
    if command.path == ("netkit",):
        leaves = [command]
    for leaf in leaves:
        path = list(leaf.path)
        parent = next((c for c in command.walk() if leaf in c.subcommands), None)
        if parent is not None and parent.default_subcommand == leaf.path[-1]:
            path[-1] = f"[{path[-1]}]"  # the group runs it when no subcommand is named
        words = " ".join(_literal(w) for w in path)
        usage = re.sub(
            r"([A-Z][A-Z0-9_-]*)", lambda m: f"\\fI{_literal(m.group(1))}\\fR", leaf.usage()
        )
        lines.append(_line(f"\\fB{words}\\fR {usage}"))
    lines.append(".fi")
    return lines


def _exit_status(intro: str, codes: list[ExitCode]) -> list[str]:
    lines = [".PP", _line(inline(intro))]
    for code in codes:
        lines += [".TP", f".B {code.code}", _line(inline(code.doc))]
    lines += [
        ".PP",
        _line(
            inline(
                "Errors are one line on standard error; with `--json` they are also an "
                '`{"event": "error", "message": ..., "exit_code": ...}` line on standard output.'
            )
        ),
    ]
    return lines


@dataclass
class Page:
    """One man page: where it goes and its roff text."""

    filename: str
    text: str


def page_name(command: Command) -> str:
    """``netkit`` for the root, ``netkit-tcp-echo`` for ``netkit tcp-echo``."""
    return "-".join(command.path)


def render_page(
    command: Command,
    *,
    root: Command,
    version: str,
    handwritten: list[Section],
    shared: list[Section],
    exit_status: tuple[str, list[ExitCode]],
) -> Page:
    """The page for ``command`` (the root, or a top-level command with all its subcommands)."""
    name = page_name(command)
    own = {s.title: s for s in handwritten}
    known = {"DESCRIPTION", "JSON OUTPUT", "EXAMPLES", "SEE ALSO", "NOTES"}
    unknown = sorted(set(own) - known)
    if unknown:
        raise SystemExit(f"gendocs: {name}.md: unknown sections {unknown}; use {sorted(known)}")
    out = [
        f'.\\" Generated by tools/gendocs.py from the CLI and tools/mansrc/{name}.md: do not edit.',
        f'.TH {_literal(name.upper())} 1 "" {_quote("netkit " + version)} {_quote(MANUAL)}',
        ".SH NAME",
        f"{_literal(name)} \\- {inline(command.short_help.rstrip('.'))}",
        ".SH SYNOPSIS",
        *_synopsis(command),
        ".SH DESCRIPTION",
        *_paragraphs(command.help),
    ]
    if command.epilog:
        out += _paragraphs(command.epilog)
    if "DESCRIPTION" in own:
        out += own["DESCRIPTION"].lines
    if command is root:
        out += [".SH COMMANDS"]
        for sub in root.subcommands:
            out += [
                ".TP",
                f"\\fB{_literal(' '.join(sub.path[1:]))}\\fR",
                _line(inline(sub.short_help)),
            ]
            out += [".RS", ".PP", f"See \\fB{_literal(page_name(sub))}\\fR(1).", ".RE"]
        out += [".SH OPTIONS", *_params(command)]
    elif command.subcommands:
        # A group: its own options (--help), then one section per command.
        for sub in command.subcommands:
            out += [f".SH {_quote(_literal(' '.join(sub.path[1:]).upper()))}"]
            out += _synopsis(sub)
            out += _paragraphs(sub.help)
            if sub.epilog:
                out += _paragraphs(sub.epilog)
            out += _params(sub)
    else:
        out += [".SH OPTIONS", *_params(command)]
    if command is not root:
        out += [
            ".PP",
            _line(
                inline("Global options (`--loop`, `--debug`) go before the command; see netkit(1).")
            ),
        ]
    for section in shared:
        out += [
            f".SH {_quote(section.title) if ' ' in section.title else section.title}",
            *section.lines,
        ]
    if "JSON OUTPUT" in own:
        out += ['.SH "JSON OUTPUT"', *own["JSON OUTPUT"].lines]
    out += ['.SH "EXIT STATUS"', *_exit_status(*exit_status)]
    if "NOTES" in own:
        out += [".SH NOTES", *own["NOTES"].lines]
    if "EXAMPLES" in own:
        out += [".SH EXAMPLES", *own["EXAMPLES"].lines]
    see = [page_name(c) for c in [root, *root.subcommands] if c is not command]
    refs = [f"\\fB{_literal(p)}\\fR(1)" for p in sorted(see)]
    out += ['.SH "SEE ALSO"', ".PP", ",\n".join(refs)]
    if "SEE ALSO" in own:
        out += own["SEE ALSO"].lines
    return Page(f"{name}.1", "\n".join(out) + "\n")


def load_handwritten(directory: Path, name: str) -> list[Section]:
    """The hand-written sections for page ``name``, or none when it has no file yet."""
    path = directory / f"{name}.md"
    if not path.exists():
        return []
    return markdown_to_roff(path.read_text(encoding="utf-8"), str(path))

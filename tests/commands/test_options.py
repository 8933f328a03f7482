"""Options every command shares: half a TLS configuration is a usage error everywhere (#13 item 12).

``--client-ca`` or ``--key`` without ``--cert`` used to be ignored: the server listened in plain
TCP and admitted clients without a certificate. Each case must exit 2 with one line, before
anything listens or connects.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from netkit.cli import app
from netkit.commands.options import ServerFlags, server_flags
from tests.commands.conftest import assert_one_line_error, run_netkit

pytestmark = pytest.mark.timeout(60)

# Every server command that takes --cert/--key/--client-ca, with arguments that would start it.
SERVERS = {
    "proxy": ["proxy", "127.0.0.1:0", "127.0.0.1:9"],
    "lb": ["lb", "127.0.0.1:0", "127.0.0.1:9"],
    "ws-server": ["ws-server", "127.0.0.1:0"],
    "tcp-echo serve": ["tcp-echo", "serve", "127.0.0.1:0"],
}
# Every client command that takes --cacert/--cert/--key.
CLIENTS = {
    "ws-client": ["ws-client", "wss://127.0.0.1:9/"],
    "tcp-echo client": ["tcp-echo", "client", "127.0.0.1:9", "-c", "1"],
    "bench": ["bench", "127.0.0.1:9", "-d", "1s"],
}


def refused(*args: str) -> str:
    """Run netkit, check it refused the command line (exit 2, one line), return stderr."""
    result = run_netkit(*args, timeout=15)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert_one_line_error(result.stderr)
    assert result.stdout == ""  # nothing listened, nothing was sent
    return result.stderr


@pytest.mark.parametrize("command", SERVERS.values(), ids=SERVERS.keys())
def test_client_ca_without_cert_is_a_usage_error(command, tls_files):
    stderr = refused(*command, "--client-ca", tls_files["ca"])
    assert "--client-ca needs --cert (or --tls-self-signed)" in stderr


@pytest.mark.parametrize("command", SERVERS.values(), ids=SERVERS.keys())
def test_server_key_without_cert_is_a_usage_error(command, tls_files):
    stderr = refused(*command, "--key", tls_files["key"])
    assert "--key needs --cert" in stderr


@pytest.mark.parametrize("command", SERVERS.values(), ids=SERVERS.keys())
def test_missing_client_ca_file_is_a_usage_error_naming_it(command, tls_files, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    tls = ["--cert", tls_files["chain"], "--key", tls_files["key"]]
    stderr = refused(*command, *tls, "--client-ca", str(missing))
    assert f"cannot read CA file '{missing}'" in stderr


@pytest.mark.parametrize("command", CLIENTS.values(), ids=CLIENTS.keys())
def test_client_key_without_cert_is_a_usage_error(command, tls_files):
    stderr = refused(*command, "--key", tls_files["key"])
    assert "--key needs --cert" in stderr


@pytest.mark.parametrize(
    "command", [*CLIENTS.values(), SERVERS["proxy"]], ids=[*CLIENTS.keys(), "proxy"]
)
def test_missing_cacert_file_is_a_usage_error_naming_it(command, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    stderr = refused(*command, "--cacert", str(missing))
    assert f"cannot read CA file '{missing}'" in stderr


def test_shared_flags_are_declared_only_in_options_py() -> None:
    """Server, TLS, socket, retry and ping options are declared once, in commands/options.py;
    a command that takes one uses that declaration (a second copy would drift)."""
    commands = Path(__file__).resolve().parents[2] / "netkit" / "commands"
    flag = re.compile(r'typer\.Option\(\s*"(--[a-z-]+)')
    shared = set(flag.findall((commands / "options.py").read_text()))
    assert {"--ping-interval", "--ping-timeout", "--retry", "--cacert", "--workers"} <= shared
    # bench's --workers is its own (load-generator processes, not a server's listeners).
    own = {"bench.py": {"--workers"}}
    copies = []
    for path in sorted(commands.glob("*.py")):
        if path.name != "options.py":
            declared = set(flag.findall(path.read_text())) - own.get(path.name, set())
            copies += [f"{path.name}: {name}" for name in sorted(declared & shared)]
    assert not copies, "declared again outside commands/options.py: " + ", ".join(copies)


def test_server_flags_are_one_group_spliced_into_each_server_command() -> None:
    """``@server_flags`` shows typer the group's flags in place of ``server`` and hands the
    command one ServerFlags built from what was given."""
    seen: list[ServerFlags] = []
    app = typer.Typer()

    @app.command()
    @server_flags
    def serve(endpoint: str, server: ServerFlags = ServerFlags(), json: bool = False) -> None:
        seen.append(server)

    result = CliRunner().invoke(
        app, ["127.0.0.1:0", "--workers", "3", "--drain-timeout", "2s", "--socket-mode", "600"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [ServerFlags(workers=3, drain_timeout="2s", socket_mode="600")]
    assert (seen[0].drain_seconds, seen[0].unix_mode, seen[0].tls.enabled) == (2.0, 0o600, False)


@pytest.mark.parametrize(
    "command", [["tcp-echo", "serve"], ["ws-server"], ["proxy"], ["lb"]], ids=" ".join
)
def test_every_server_command_takes_the_one_server_group(command: list[str]) -> None:
    found = typer.main.get_command(app)
    for name in command:  # the root loads each command's module when asked (cli.LazyGroup)
        assert isinstance(found, click.Group)
        sub = found.get_command(click.Context(found), name)
        assert sub is not None, name
        found = sub
    flags = {opt for param in found.params for opt in param.opts}
    expected = {"--" + f.replace("_", "-") for f in ServerFlags.__dataclass_fields__}
    assert expected <= flags

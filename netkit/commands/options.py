"""Options shared by several commands, declared once as ``Annotated`` types, and their builders."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import click
import typer

from netkit.console import active_output
from netkit.core.access import AccessList, rules_from_text
from netkit.core.proxy_protocol import Accept
from netkit.core.units import parse_duration, parse_size
from netkit.errors import ConfigError
from netkit.net.sockets import SocketOptions, parse_socket_mode
from netkit.net.tls import ClientTLS, ServerTLS

TLS_PANEL = "TLS"
SOCKET_PANEL = "Sockets"
SERVER_PANEL = "Server"

# --- settings named in errors -------------------------------------------------------------
# core/ and net/ name settings, not flags (netkit.errors.Setting); the command line shows each
# as the flag that sets it: "--" and the name with dashes, or the exception listed here.
_FLAG_EXCEPTIONS = {"self_signed": "--tls-self-signed", "server_hostname": "--sni"}


def flag_name(setting: str) -> str:
    """The flag that sets ``setting`` (``max_size`` -> ``--max-size``)."""
    return _FLAG_EXCEPTIONS.get(setting) or "--" + setting.replace("_", "-")


Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per line (events).")]

# --- servers -------------------------------------------------------------------------------
Cert = Annotated[
    Path | None,
    typer.Option(
        "--cert", help="TLS certificate chain (PEM); enables TLS.", rich_help_panel=TLS_PANEL
    ),
]
Key = Annotated[
    Path | None,
    typer.Option(
        "--key", help="Private key (PEM) for --cert, if not inside it.", rich_help_panel=TLS_PANEL
    ),
]
SelfSigned = Annotated[
    bool,
    typer.Option(
        "--tls-self-signed",
        help="TLS with a throwaway CA and certificate for localhost; prints the CA file to trust.",
        rich_help_panel=TLS_PANEL,
    ),
]
ClientCA = Annotated[
    Path | None,
    typer.Option(
        "--client-ca",
        help="Require client certificates signed by this CA (mutual TLS).",
        rich_help_panel=TLS_PANEL,
    ),
]
SOCKET_MODE = "660"
SocketMode = Annotated[
    str,
    typer.Option(
        "--socket-mode",
        help="Permissions of a Unix socket file (octal).",
        rich_help_panel=SOCKET_PANEL,
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        max=256,
        help="Worker processes sharing the port (SO_REUSEPORT).",
        rich_help_panel=SERVER_PANEL,
    ),
]
DRAIN_TIMEOUT = "10s"
DrainTimeout = Annotated[
    str,
    typer.Option(
        "--drain-timeout",
        help="On SIGTERM, SIGHUP, SIGUSR1 or SIGINT, how long open connections may finish.",
        rich_help_panel=SERVER_PANEL,
    ),
]
MaxConnections = Annotated[
    int | None,
    typer.Option(
        "--max-connections",
        min=1,
        help="Close connections beyond this many at once.",
        rich_help_panel=SERVER_PANEL,
    ),
]
IdleTimeout = Annotated[
    str | None,
    typer.Option(
        "--idle-timeout",
        help="Close a connection after this long without data (e.g. 30s).",
        rich_help_panel=SERVER_PANEL,
    ),
]
RELAY_IDLE_TIMEOUT = "10m"  # nginx stream's proxy_timeout default
RelayIdleTimeout = Annotated[
    str,
    typer.Option(
        "--idle-timeout",
        help="Close a connection when neither side has sent anything for this long (nginx "
        "stream's proxy_timeout, 10 minutes by default); 0 never closes.",
        rich_help_panel=SERVER_PANEL,
    ),
]

# --- clients -------------------------------------------------------------------------------
UseTLS = Annotated[
    bool,
    typer.Option(
        "--tls",
        help="Connect with TLS (also turned on by --cacert, --cert, --insecure or --sni).",
        rich_help_panel=TLS_PANEL,
    ),
]
CACert = Annotated[
    Path | None,
    typer.Option(
        "--cacert",
        help="Trust this CA bundle (PEM) instead of the system's.",
        rich_help_panel=TLS_PANEL,
    ),
]
ClientCert = Annotated[
    Path | None,
    typer.Option(
        "--cert",
        help="Client certificate (PEM) for mutual TLS.",
        rich_help_panel=TLS_PANEL,
    ),
]
ClientKey = Annotated[
    Path | None,
    typer.Option(
        "--key", help="Private key (PEM) for --cert, if not inside it.", rich_help_panel=TLS_PANEL
    ),
]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        "-k",
        help="Do not verify the server's certificate.",
        rich_help_panel=TLS_PANEL,
    ),
]
SNI = Annotated[
    str | None,
    typer.Option(
        "--sni",
        help="Server name to send and verify (default: the endpoint's host).",
        rich_help_panel=TLS_PANEL,
    ),
]

Retry = Annotated[
    str | None,
    typer.Option(
        "--retry",
        help="Keep retrying a refused connection this long (wait for a server to start).",
    ),
]

# --- WebSocket keepalive pings (ws-client, ws-server) ---------------------------------------
PING_INTERVAL = PING_TIMEOUT = "20s"  # the websockets library's defaults
PingInterval = Annotated[
    str, typer.Option("--ping-interval", help="Keepalive ping period; 0 disables.")
]
PingTimeout = Annotated[
    str,
    typer.Option(
        "--ping-timeout",
        help="Give up on the connection when a ping is not answered in time (ws-client: exit "
        "4; ws-server: close 1011); 0 disables.",
    ),
]


def pings(interval: str, timeout: str) -> tuple[float | None, float | None]:
    """``--ping-interval`` and ``--ping-timeout`` in seconds, None for ``0`` (off)."""
    return duration_or_off(interval, "--ping-interval"), duration_or_off(timeout, "--ping-timeout")


# --- a relay's upstream (proxy) ------------------------------------------------------------
UPSTREAM_PANEL = "Upstream TLS"
UpstreamTLS = Annotated[
    bool,
    typer.Option(
        "--upstream-tls",
        help="Speak TLS to the upstream (verified unless --insecure).",
        rich_help_panel=UPSTREAM_PANEL,
    ),
]
UpstreamCACert = Annotated[
    Path | None,
    typer.Option(
        "--cacert",
        help="CA bundle to verify the upstream with (lb: its TLS backends); turns that TLS on.",
        rich_help_panel=UPSTREAM_PANEL,
    ),
]
UpstreamInsecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        "-k",
        help="Do not verify the upstream's certificate (lb: its backends'); turns that TLS on.",
        rich_help_panel=UPSTREAM_PANEL,
    ),
]
UpstreamSNI = Annotated[
    str | None,
    typer.Option(
        "--sni",
        help="Server name for the upstream TLS handshake; implies --upstream-tls.",
        rich_help_panel=UPSTREAM_PANEL,
    ),
]

# --- sockets -------------------------------------------------------------------------------
SendBuffer = Annotated[
    str | None,
    typer.Option("--sndbuf", help="SO_SNDBUF size (e.g. 256KiB).", rich_help_panel=SOCKET_PANEL),
]
RecvBuffer = Annotated[
    str | None,
    typer.Option("--rcvbuf", help="SO_RCVBUF size (e.g. 256KiB).", rich_help_panel=SOCKET_PANEL),
]
KeepAlive = Annotated[
    bool,
    typer.Option("--keepalive", help="Enable TCP keepalive probes.", rich_help_panel=SOCKET_PANEL),
]
NoDelay = Annotated[
    bool,
    typer.Option(
        "--nodelay/--no-nodelay", help="TCP_NODELAY (on by default).", rich_help_panel=SOCKET_PANEL
    ),
]


# --- allow/deny lists ----------------------------------------------------------------------
ACCESS_PANEL = "Access"
Allow = Annotated[
    list[str] | None,
    typer.Option(
        "--allow",
        metavar="CIDR",
        help="Serve only clients in this network or at this address (repeatable; IPv4 or "
        "IPv6); with no --allow, everyone not denied.",
        rich_help_panel=ACCESS_PANEL,
    ),
]
Deny = Annotated[
    list[str] | None,
    typer.Option(
        "--deny",
        metavar="CIDR",
        help="Never serve clients in this network or at this address (repeatable); wins over "
        "--allow, whatever the order.",
        rich_help_panel=ACCESS_PANEL,
    ),
]
AllowFile = Annotated[
    Path | None,
    typer.Option(
        "--allow-file",
        help="More --allow rules, one per line (# starts a comment).",
        rich_help_panel=ACCESS_PANEL,
    ),
]
DenyFile = Annotated[
    Path | None,
    typer.Option(
        "--deny-file",
        help="More --deny rules, one per line (# starts a comment).",
        rich_help_panel=ACCESS_PANEL,
    ),
]


def _rules_file(path: Path | None, option: str) -> list[str]:
    # The rules in an --allow-file/--deny-file: one per line, blank lines and # comments skipped.
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{option} {path}: {reason}") from None
    return rules_from_text(text)


def access_list(
    allow: list[str] | None,
    deny: list[str] | None,
    allow_file: Path | None = None,
    deny_file: Path | None = None,
) -> AccessList:
    """The allow/deny lists of ``--allow``, ``--deny``, ``--allow-file`` and ``--deny-file``.

    Raises:
        ConfigError: a rule that is not an address or a CIDR network, a file not readable.
    """
    return AccessList(
        [*(allow or []), *_rules_file(allow_file, "--allow-file")],
        [*(deny or []), *_rules_file(deny_file, "--deny-file")],
    )


@dataclass(frozen=True)
class ServerFlags:
    """The flags every server command takes (limits, workers, drain, Unix socket mode, TLS,
    allow/deny lists).

    Declared once: a command asks for them with a ``server: ServerFlags = ServerFlags()``
    parameter under :func:`server_flags`, which puts these flags in its place on the command
    line and hands the command one ``ServerFlags``.
    """

    max_connections: MaxConnections = None
    workers: Workers = 1
    drain_timeout: DrainTimeout = DRAIN_TIMEOUT
    socket_mode: SocketMode = SOCKET_MODE
    cert: Cert = None
    key: Key = None
    tls_self_signed: SelfSigned = False
    client_ca: ClientCA = None
    allow: Allow = None
    deny: Deny = None
    allow_file: AllowFile = None
    deny_file: DenyFile = None

    @property
    def access(self) -> AccessList:
        """The allow/deny lists (empty: every client is served)."""
        return access_list(self.allow, self.deny, self.allow_file, self.deny_file)

    @property
    def tls(self) -> ServerTLS:
        """The server TLS settings (refuses half a configuration)."""
        return server_tls(self.cert, self.key, self.tls_self_signed, self.client_ca)

    @property
    def drain_seconds(self) -> float:
        """``--drain-timeout`` in seconds."""
        return parse_duration(self.drain_timeout, option="--drain-timeout")

    @property
    def unix_mode(self) -> int:
        """``--socket-mode`` as permission bits."""
        return socket_mode(self.socket_mode)


Command = TypeVar("Command", bound=Callable[..., Any])


def flag_group(group: type, parameter: str) -> Callable[[Command], Command]:
    """A decorator that gives a command the flags of the dataclass ``group`` in place of its
    ``parameter`` parameter (see :func:`server_flags`)."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        hints = get_type_hints(group, include_extras=True)
        spliced = [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name]
            )
            for f in fields(group)
        ]
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == parameter:
                params.extend(spliced)
            else:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            flags = group(**{p.name: kwargs.pop(p.name) for p in spliced})
            return command(*args, **{parameter: flags}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def server_flags(command: Command) -> Command:
    """Give ``command`` the shared server flags in place of its ``server`` parameter.

    typer reads a command's options from its signature, so the wrapper shows typer the
    command's own parameters with :class:`ServerFlags`' fields spliced in where ``server``
    was, and gathers them back into one ``ServerFlags`` on each call.
    """
    return flag_group(ServerFlags, "server")(command)


def socket_options(
    sndbuf: str | None, rcvbuf: str | None, keepalive: bool, nodelay: bool = True
) -> SocketOptions:
    """Build :class:`SocketOptions` from the shared socket flags."""
    return SocketOptions(
        nodelay=nodelay,
        keepalive=keepalive,
        sndbuf=parse_size(sndbuf, option="--sndbuf") if sndbuf else None,
        rcvbuf=parse_size(rcvbuf, option="--rcvbuf") if rcvbuf else None,
    )


def server_tls(
    cert: Path | None, key: Path | None, self_signed: bool, client_ca: Path | None
) -> ServerTLS:
    """Build :class:`ServerTLS` from the shared server TLS flags."""
    return ServerTLS(cert=cert, key=key, self_signed=self_signed, client_ca=client_ca)


def client_tls(
    tls: bool,
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    sni: str | None,
    *,
    warn: bool = True,
) -> ClientTLS:
    """Build :class:`ClientTLS`; any TLS-specific flag turns TLS on.

    ``--insecure`` is said out loud on stderr, once, in every output mode (after every check
    of the options: a refused command line gets its error alone).

    Args:
        warn: False when the caller goes on to refuse TLS options (no warning then).
    """
    enabled = tls or cacert is not None or cert is not None or insecure or sni is not None
    options = ClientTLS(enabled, cacert, cert, key, insecure, sni)  # refuses half a config
    out = active_output()
    if insecure and warn and out is not None:
        out.warn(
            "--insecure: certificates are not verified, anyone on the path can pose as the server"
        )
    return options


def socket_mode(text: str) -> int:
    """Parse ``--socket-mode``."""
    return parse_socket_mode(text)


def duration(text: str | None, option: str) -> float | None:
    """Parse an optional duration flag."""
    return None if text is None else parse_duration(text, option=option)


def duration_or_off(text: str, option: str) -> float | None:
    """Parse a duration flag where ``0`` turns the thing off (None)."""
    return parse_duration(text, option=option) or None


def retry(text: str | None) -> float:
    """``--retry``: how long to keep retrying a refused connection (0: not at all)."""
    return parse_duration(text, option="--retry") if text else 0.0


def idle_timeout(text: str) -> float | None:
    """``--idle-timeout`` for a relay: seconds, or None for ``0`` (never)."""
    return parse_duration(text, option="--idle-timeout") or None


# --- relays (proxy, lb) --------------------------------------------------------------------
ProxyProtocol = Annotated[
    str | None,
    typer.Option(
        "--proxy-protocol",
        click_type=click.Choice(["v1", "v2"]),
        help="Send a PROXY protocol header with the client's address to the upstream.",
    ),
]
Splice = Annotated[
    bool,
    typer.Option(
        "--splice/--no-splice",
        help="Relay plain TCP/Unix with os.splice (payload never enters Python).",
    ),
]


def proxy_protocol_version(choice: str | None) -> int:
    """``--proxy-protocol v1|v2`` as the version number, 0 when not asked for."""
    return int(choice[1]) if choice else 0


PROXY_HEADER_TIMEOUT = "5s"
AcceptProxyProtocol = Annotated[
    str | None,
    typer.Option(
        "--accept-proxy-protocol",
        click_type=click.Choice([a.value for a in Accept]),
        help="Every client must first send a PROXY protocol header of this version (HAProxy's "
        "send-proxy, send-proxy-v2): the client it names is the one logged, hashed and sent "
        "onward; a client without a valid one is closed (proxy_header_rejected).",
    ),
]
ProxyHeaderTimeout = Annotated[
    str,
    typer.Option(
        "--proxy-header-timeout",
        help="Time a client has to send its whole PROXY header (5s by default).",
    ),
]


@dataclass(frozen=True)
class ProxyAcceptFlags:
    """``--accept-proxy-protocol`` and ``--proxy-header-timeout`` (proxy, lb)."""

    accept_proxy_protocol: AcceptProxyProtocol = None
    proxy_header_timeout: ProxyHeaderTimeout = PROXY_HEADER_TIMEOUT

    def relay_options(self) -> dict[str, Any]:
        """The :class:`~netkit.net.relay.RelayOptions` fields these flags set."""
        timeout = parse_duration(
            self.proxy_header_timeout, option="--proxy-header-timeout", positive=True
        )
        accept = self.accept_proxy_protocol
        return {
            "accept_proxy_protocol": None if accept is None else Accept.parse(accept),
            "proxy_header_timeout": timeout,
        }


def proxy_accept_flags(command: Command) -> Command:
    """Give ``command`` the PROXY protocol accept flags in place of its ``accept`` parameter."""
    return flag_group(ProxyAcceptFlags, "accept")(command)


# --- the control server (lb, proxy) --------------------------------------------------------
CONTROL_PANEL = "Control"
Metrics = Annotated[
    str | None,
    typer.Option(
        "--metrics",
        metavar="HOST:PORT",
        help="Serve Prometheus metrics (HAProxy's exporter names) at /metrics and a JSON snapshot"
        " at /stats on HOST:PORT (loopback unless a host is given; :0 picks a port).",
        rich_help_panel=CONTROL_PANEL,
    ),
]

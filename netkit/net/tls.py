"""SSLContext builders for servers and clients. TLS 1.2 is the minimum everywhere."""

from __future__ import annotations

import atexit
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from netkit.errors import ConfigError, Setting, Words, words

# The TLS settings errors mention (the command line shows them as its flags).
CERT, KEY, CLIENT_CA = Setting("cert"), Setting("key"), Setting("client_ca")
SELF_SIGNED, CACERT, SNI = Setting("self_signed"), Setting("cacert"), Setting("server_hostname")
INSECURE = Setting("insecure")


@dataclass(frozen=True)
class ServerTLS:
    """What a TLS listener needs from the command line.

    Half a configuration is refused here, once for every server command: ``--client-ca`` or
    ``--key`` without a certificate would otherwise leave the server listening in plain text,
    admitting clients the user meant to require a certificate from (#13 item 12).

    Attributes:
        cert, key: PEM files (key may be inside ``cert``).
        self_signed: issue a throwaway CA and certificate instead (for local use).
        client_ca: require client certificates signed by this CA (mutual TLS).

    Raises:
        ConfigError: ``client_ca`` without ``cert`` or ``self_signed``; ``key`` without ``cert``.
    """

    cert: Path | None = None
    key: Path | None = None
    self_signed: bool = False
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise ConfigError(
                (KEY, " needs ", CERT, ": a private key alone does not turn TLS on"),
                hint=("pass the certificate it belongs to with ", CERT, " FILE"),
            )
        if self.client_ca is not None and not self.enabled:
            raise ConfigError(
                (
                    CLIENT_CA,
                    " needs ",
                    CERT,
                    " (or ",
                    SELF_SIGNED,
                    "): without a certificate the server would listen in plain text and admit"
                    " clients without one",
                )
            )

    @property
    def enabled(self) -> bool:
        """True when any TLS option was given."""
        return self.self_signed or self.cert is not None


@dataclass(frozen=True)
class ClientTLS:
    """What a TLS client needs from the command line.

    Attributes:
        enabled: use TLS at all.
        cacert: trust this CA bundle instead of the system's.
        cert, key: a client certificate (mutual TLS).
        insecure: skip certificate and hostname verification (only when asked).
        server_hostname: SNI and verification name override.

    Raises:
        ConfigError: ``key`` without ``cert`` (it would be ignored: no client certificate sent).
    """

    enabled: bool = False
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise ConfigError(
                (KEY, " needs ", CERT, ": a private key alone sends no client certificate"),
                hint=("pass the certificate it belongs to with ", CERT, " FILE"),
            )


def _readable(path: Path, what: str) -> str:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    return str(path)


def _chain_problem(certfile: str, keyfile: str | None, exc: ssl.SSLError) -> Words:
    """Say what is wrong with a certificate and key OpenSSL refused, in terms a user can act on.

    OpenSSL's own words for the commonest mistakes are "[SSL] PEM lib (_ssl.c:3926)"; the
    PEM markers in the files tell which file lacks what.
    """
    with open(certfile, "rb") as f:
        cert_pem = f.read()
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        return f"{certfile!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if keyfile is None:
        if b"PRIVATE KEY-----" not in cert_pem:
            return (
                f"{certfile!r} holds no private key: pass ",
                KEY,
                " FILE, or put the key in the same PEM file",
            )
    else:
        with open(keyfile, "rb") as f:
            if b"PRIVATE KEY-----" not in f.read():
                return f"{keyfile!r} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the private key does not match the certificate (it belongs to another one)"
    return str(exc.reason or exc)


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    certfile = _readable(cert, "certificate file")
    keyfile = _readable(key, "key file") if key is not None else None
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        with_key = f" with key {keyfile!r}" if keyfile else ""
        raise ConfigError(
            words(
                f"cannot use certificate {certfile!r}{with_key}: ",
                _chain_problem(certfile, keyfile, exc),
            )
        ) from None


def _load_ca(ctx: ssl.SSLContext, cafile: Path) -> None:
    path = _readable(cafile, "CA file")
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot use CA file {path!r}: {exc.reason or exc}") from None


def self_signed_files(
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
) -> tuple[Path, Path]:
    """Issue a throwaway CA and a server certificate for ``hosts`` with trustme.

    The files live in a private temporary directory removed at exit.

    Returns:
        (CA certificate PEM path for clients to trust, server cert+key PEM path).
    """
    import trustme  # imported here: only --tls-self-signed needs it

    ca = trustme.CA()
    leaf = ca.issue_cert(*hosts)
    directory = tempfile.mkdtemp(prefix="netkit-tls-")
    os.chmod(directory, 0o700)
    atexit.register(shutil.rmtree, directory, True)  # the key must not outlive the process
    ca_path = Path(directory, "ca.pem")
    ca.cert_pem.write_to_path(str(ca_path))
    chain = Path(directory, "server.pem")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))
    return ca_path, chain


def server_context(tls: ServerTLS) -> tuple[ssl.SSLContext, Path | None]:
    """Build a server SSLContext.

    Returns:
        The context, and the CA file clients should trust when ``self_signed``, else None.

    Raises:
        ConfigError: a file is missing or does not hold a usable certificate or key.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ca_path: Path | None = None
    if tls.self_signed:
        ca_path, chain = self_signed_files()
        _load_chain(ctx, chain, None)
    elif tls.cert is not None:
        _load_chain(ctx, tls.cert, tls.key)
    else:
        raise ConfigError(("TLS needs ", CERT, " (and ", KEY, "), or ", SELF_SIGNED))
    if tls.client_ca is not None:
        _load_ca(ctx, tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx, ca_path


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """Build a client SSLContext that verifies the server unless ``insecure``.

    Raises:
        ConfigError: a file is missing or unusable.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cacert is not None:
        _load_ca(ctx, tls.cacert)
    if tls.cert is not None:
        _load_chain(ctx, tls.cert, tls.key)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

"""Flags for TLS onward, to where a relay connects: ``proxy``'s upstream and ``lb``'s backends.

One group, :class:`OnwardTLSFlags`, holds the logic (what turns TLS on, half a client
certificate refused, the client settings); each command declares it with its own noun:

* ``proxy``: ``--upstream-tls``, ``--cacert``, ``--insecure``, ``--sni`` (as before) and a
  client certificate for mutual TLS, ``--upstream-cert``/``--upstream-key``;
* ``lb``: ``--backend-tls``, ``--cacert``, ``--insecure``, ``--backend-sni``,
  ``--backend-cert``/``--backend-key`` (``--cert`` and ``--key`` are the listener's own).

Any of them turns TLS on (for every backend, unless some backends ask for it themselves with
``HOST:PORT,tls``: then only those speak TLS, with these settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import typer

from netkit.commands import options as opt
from netkit.core.balance.backends import Backend
from netkit.errors import UsageError
from netkit.net.backend_tls import BackendTLS, with_tls
from netkit.net.tls import ClientTLS, client_context


@dataclass(frozen=True)
class OnwardTLSFlags:
    """TLS to where a relay connects; the subclasses name the flags.

    Attributes:
        onward_tls: TLS on without any other setting.
        cacert: the CA bundle to verify with (else the system's).
        insecure: do not verify.
        onward_sni: the server name to send and verify.
        onward_cert, onward_key: a client certificate (mutual TLS).
    """

    FLAGS: ClassVar[dict[str, str]] = {}  # field -> its flag, for messages

    onward_tls: bool = False
    cacert: Path | None = None
    insecure: bool = False
    onward_sni: str | None = None
    onward_cert: Path | None = None
    onward_key: Path | None = None

    @property
    def given(self) -> bool:
        """True when any of these flags was given."""
        return (
            self.onward_tls
            or self.insecure
            or any(
                v is not None
                for v in (self.cacert, self.onward_sni, self.onward_cert, self.onward_key)
            )
        )

    def _check_client_cert(self) -> None:
        # Half a client certificate would be ignored (no certificate sent) or refused by
        # OpenSSL in words naming the listener's --key: say it with these flags' names.
        cert, key = self.FLAGS["onward_cert"], self.FLAGS["onward_key"]
        if self.onward_key is not None and self.onward_cert is None:
            raise UsageError(f"{key} needs {cert}: a private key alone sends no client certificate")
        if self.onward_cert is not None and self.onward_key is None:
            try:
                pem = self.onward_cert.read_bytes()
            except OSError as exc:
                raise UsageError(f"{cert} {self.onward_cert}: {exc.strerror}") from None
            if b"PRIVATE KEY-----" not in pem:
                raise UsageError(
                    f"{cert} {self.onward_cert} holds no private key: pass {key} FILE, or put"
                    " the key in the same PEM file"
                )

    def client_tls(self, *, enabled: bool | None = None) -> ClientTLS:
        """The client TLS settings (``enabled``: on whatever was given, when True).

        Raises:
            UsageError: half a client certificate.
        """
        self._check_client_cert()
        return opt.client_tls(
            self.given if enabled is None else enabled,
            self.cacert,
            self.onward_cert,
            self.onward_key,
            self.insecure,
            None,  # the server name is the caller's, per upstream
        )

    def flags_given(self) -> dict[str, bool]:
        """Each flag, with whether it was given (for a command that must refuse them)."""
        return {flag: bool(getattr(self, name)) for name, flag in self.FLAGS.items()}


_CERT_HELP = "Client certificate (PEM) to show the {noun} (mutual TLS); implies {tls}."


@dataclass(frozen=True)
class UpstreamTLSFlags(OnwardTLSFlags):
    """``proxy``'s upstream TLS flags."""

    FLAGS: ClassVar[dict[str, str]] = {
        "onward_tls": "--upstream-tls",
        "cacert": "--cacert",
        "insecure": "--insecure",
        "onward_sni": "--sni",
        "onward_cert": "--upstream-cert",
        "onward_key": "--upstream-key",
    }

    onward_tls: opt.UpstreamTLS = False
    cacert: opt.UpstreamCACert = None
    insecure: opt.UpstreamInsecure = False
    onward_sni: opt.UpstreamSNI = None
    onward_cert: Annotated[
        Path | None,
        typer.Option(
            "--upstream-cert",
            help=_CERT_HELP.format(noun="upstream", tls="--upstream-tls"),
            rich_help_panel=opt.UPSTREAM_PANEL,
        ),
    ] = None
    onward_key: Annotated[
        Path | None,
        typer.Option(
            "--upstream-key",
            help="Private key (PEM) for --upstream-cert, if not inside it.",
            rich_help_panel=opt.UPSTREAM_PANEL,
        ),
    ] = None


BACKEND_PANEL = opt.UPSTREAM_PANEL  # lb's backends are its upstreams


@dataclass(frozen=True)
class BackendTLSFlags(OnwardTLSFlags):
    """``lb``'s backend TLS flags."""

    FLAGS: ClassVar[dict[str, str]] = {
        "onward_tls": "--backend-tls",
        "cacert": "--cacert",
        "insecure": "--insecure",
        "onward_sni": "--backend-sni",
        "onward_cert": "--backend-cert",
        "onward_key": "--backend-key",
    }

    onward_tls: Annotated[
        bool,
        typer.Option(
            "--backend-tls",
            help="Reach every backend over TLS, verified against the system's CAs or --cacert"
            " unless --insecure (or only backends written HOST:PORT,tls).",
            rich_help_panel=BACKEND_PANEL,
        ),
    ] = False
    cacert: opt.UpstreamCACert = None
    insecure: opt.UpstreamInsecure = False
    onward_sni: Annotated[
        str | None,
        typer.Option(
            "--backend-sni",
            metavar="NAME",
            help="Server name to send and verify (default: each backend's host; a backend's"
            " own sni=NAME wins); implies --backend-tls.",
            rich_help_panel=BACKEND_PANEL,
        ),
    ] = None
    onward_cert: Annotated[
        Path | None,
        typer.Option(
            "--backend-cert",
            help=_CERT_HELP.format(noun="backends", tls="--backend-tls"),
            rich_help_panel=BACKEND_PANEL,
        ),
    ] = None
    onward_key: Annotated[
        Path | None,
        typer.Option(
            "--backend-key",
            help="Private key (PEM) for --backend-cert, if not inside it.",
            rich_help_panel=BACKEND_PANEL,
        ),
    ] = None

    def configure(self, backends: list[Backend]) -> tuple[list[Backend], BackendTLS | None]:
        """The backends with TLS where it applies, and the TLS they share (None: no backend
        speaks TLS); see :func:`netkit.net.backend_tls.with_tls`.

        Raises:
            UsageError: half a client certificate.
            ConfigError: a file that is missing or unusable.
        """
        self._check_client_cert()
        context = None
        if self.given or any(b.tls for b in backends):
            context = client_context(self.client_tls(enabled=True))
        return with_tls(backends, context, self.onward_sni)


def upstream_tls_flags(command: opt.Command) -> opt.Command:
    """Give ``command`` proxy's upstream TLS flags in place of its ``to_upstream`` parameter."""
    return opt.flag_group(UpstreamTLSFlags, "to_upstream")(command)


def backend_tls_flags(command: opt.Command) -> opt.Command:
    """Give ``command`` lb's backend TLS flags in place of its ``to_backends`` parameter."""
    return opt.flag_group(BackendTLSFlags, "to_backends")(command)

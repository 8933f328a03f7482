"""``lb``'s flags for TLS to its backends, declared once as a flag group.

Named after ``proxy``'s upstream TLS flags (``--upstream-tls``, ``--cacert``, ``--insecure``,
``--sni``) with lb's noun: ``--backend-tls``, ``--cacert``, ``--insecure``, ``--backend-sni``,
and a client certificate for mutual TLS, ``--backend-cert``/``--backend-key`` (``--cert`` and
``--key`` are already the listener's own certificate). As with ``proxy``, any of them turns
TLS on for every backend, unless some backends ask for it themselves (``HOST:PORT,tls``):
then only those speak TLS, with these settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from netkit.commands import options as opt
from netkit.core.balance.backends import Backend
from netkit.errors import UsageError
from netkit.net.backend_tls import BackendTLS
from netkit.net.tls import client_context

PANEL = "Backend TLS"


@dataclass(frozen=True)
class BackendTLSFlags:
    """``--backend-tls`` and the flags that verify and authenticate it."""

    backend_tls: Annotated[
        bool,
        typer.Option(
            "--backend-tls",
            help="Reach every backend over TLS, verified against the system's CAs or --cacert"
            " unless --insecure (or only backends written HOST:PORT,tls).",
            rich_help_panel=PANEL,
        ),
    ] = False
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            help="CA bundle (PEM) to verify the backends with; implies --backend-tls.",
            rich_help_panel=PANEL,
        ),
    ] = None
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            "-k",
            help="Do not verify the backends' certificates; implies --backend-tls.",
            rich_help_panel=PANEL,
        ),
    ] = False
    backend_sni: Annotated[
        str | None,
        typer.Option(
            "--backend-sni",
            metavar="NAME",
            help="Server name to send and verify (default: each backend's host; a backend's"
            " own sni=NAME wins); implies --backend-tls.",
            rich_help_panel=PANEL,
        ),
    ] = None
    backend_cert: Annotated[
        Path | None,
        typer.Option(
            "--backend-cert",
            help="Client certificate (PEM) to show the backends (mutual TLS); implies"
            " --backend-tls.",
            rich_help_panel=PANEL,
        ),
    ] = None
    backend_key: Annotated[
        Path | None,
        typer.Option(
            "--backend-key",
            help="Private key (PEM) for --backend-cert, if not inside it.",
            rich_help_panel=PANEL,
        ),
    ] = None

    @property
    def given(self) -> bool:
        """True when any of these flags was given."""
        return (
            self.backend_tls
            or self.insecure
            or self.cacert is not None
            or self.backend_sni is not None
            or self.backend_cert is not None
            or self.backend_key is not None
        )

    def _check_client_cert(self) -> None:
        # Half a client certificate would be ignored (no certificate sent) or refused by
        # OpenSSL in words naming the listener's --key: say it with these flags' names.
        if self.backend_key is not None and self.backend_cert is None:
            raise UsageError(
                "--backend-key needs --backend-cert: a private key alone sends no client"
                " certificate"
            )
        if self.backend_cert is not None and self.backend_key is None:
            try:
                pem = self.backend_cert.read_bytes()
            except OSError as exc:
                raise UsageError(f"--backend-cert {self.backend_cert}: {exc.strerror}") from None
            if b"PRIVATE KEY-----" not in pem:
                raise UsageError(
                    f"--backend-cert {self.backend_cert} holds no private key:"
                    " pass --backend-key FILE, or put the key in the same PEM file"
                )

    def configure(self, backends: list[Backend]) -> tuple[list[Backend], BackendTLS | None]:
        """The backends with TLS where it applies, and the TLS they share (None: no backend
        speaks TLS).

        Raises:
            UsageError: half a client certificate.
            ConfigError: a file that is missing or unusable.
        """
        self._check_client_cert()
        if not any(b.tls for b in backends):
            if not self.given:
                return backends, None
            backends = [replace(b, tls=True) for b in backends]
        settings = opt.client_tls(
            True, self.cacert, self.backend_cert, self.backend_key, self.insecure, None
        )
        return backends, BackendTLS(client_context(settings), self.backend_sni)


def backend_tls_flags(command: opt.Command) -> opt.Command:
    """Give ``command`` the backend TLS flags in place of its ``to_backends`` parameter."""
    return opt.flag_group(BackendTLSFlags, "to_backends")(command)

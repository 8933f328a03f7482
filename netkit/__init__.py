"""netkit: one command-line toolbox for network work, and a small Python API for test suites.

The public API is every name in :data:`__all__` (and the pytest plugin's fixtures); everything
else, ``netkit.core``, ``netkit.net``, ``netkit.commands`` and any module not re-exported here,
is internal and may change in any release (see docs/api.md, "Stability").

The names are exported lazily (module ``__getattr__``): ``import netkit`` costs nothing more than
this file, so the command line starts as fast as before; ``netkit.echo_server`` imports its
module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Every public name -> the module that defines it. One block per module; a module's names are
# listed here only once that module exists (tests/test_package.py checks each one resolves,
# has a docstring, and that ``import netkit`` imports none of these modules).
_EXPORTS: dict[str, str] = {
    # --- faults (netkit/core/faults.py): typed, toxiproxy's units ---------------------------
    "Fault": "netkit.core.faults",
    "Latency": "netkit.core.faults",
    "Bandwidth": "netkit.core.faults",
    "Slice": "netkit.core.faults",
    "LimitData": "netkit.core.faults",
    "ResetAfter": "netkit.core.faults",
    "BlackholeAfter": "netkit.core.faults",
    "SlowClose": "netkit.core.faults",
    "AcceptDelay": "netkit.core.faults",
    "Refuse": "netkit.core.faults",
    # --- datagram faults (netkit/core/datagram_faults.py): the UDP relay's, same units ---------
    "Loss": "netkit.core.datagram_faults",
    "BurstLoss": "netkit.core.datagram_faults",
    "Duplicate": "netkit.core.datagram_faults",
    "Reorder": "netkit.core.datagram_faults",
    "Corrupt": "netkit.core.datagram_faults",
    "Truncate": "netkit.core.datagram_faults",
    "Rate": "netkit.core.datagram_faults",
    "DropFirst": "netkit.core.datagram_faults",
    # --- errors (netkit/errors.py) -----------------------------------------------------------
    "NetkitError": "netkit.errors",
    "UsageError": "netkit.errors",
    "EndpointError": "netkit.errors",
    "ConfigError": "netkit.errors",
    "FaultExists": "netkit.errors",
    "NoSuchFault": "netkit.errors",
    "LocalError": "netkit.errors",
    "BindError": "netkit.errors",
    "ResourceExhausted": "netkit.errors",
    "NetworkError": "netkit.errors",
    "ConnectError": "netkit.errors",
    "ConnectionLost": "netkit.errors",
    "OperationTimeout": "netkit.errors",
    "TLSError": "netkit.errors",
    "PeerProtocolError": "netkit.errors",
    "LocalProtocolError": "netkit.errors",
    "CheckFailed": "netkit.errors",
    # --- servers, WebSocket client, bench (netkit/api/: helper "api") ------------------------
    "echo_server": "netkit.api.servers",
    "EchoServer": "netkit.api.servers",
    "udp_echo_server": "netkit.api.servers",
    "UDPEchoServer": "netkit.api.servers",
    "Listening": "netkit.api.servers",
    "StreamListener": "netkit.api.servers",
    "ws_server": "netkit.api.websocket",
    "WebSocketServer": "netkit.api.websocket",
    "ws_connect": "netkit.api.websocket",
    "WebSocket": "netkit.api.websocket",
    "bench": "netkit.api.bench",
    "bench_sync": "netkit.api.bench",
    "BenchResult": "netkit.api.bench",
    "ServerTLS": "netkit.net.tls",
    "ClientTLS": "netkit.net.tls",
    # --- fault proxy and load balancer (netkit/api/proxy.py) ---------------------------------
    "proxy": "netkit.api.proxy",
    "Proxy": "netkit.api.proxy",
    "load_balancer": "netkit.api.proxy",
    "LoadBalancer": "netkit.api.proxy",
    "RelayTotals": "netkit.api.proxy",
    "FaultControls": "netkit.api.faults",
    # --- UDP fault proxy (netkit/api/udp_proxy.py) ------------------------------------------
    "udp_proxy": "netkit.api.udp_proxy",
    "UDPProxy": "netkit.api.udp_proxy",
    # --- synchronous driving (netkit/api/background.py: what the pytest plugin runs on) ------
    "BackgroundLoop": "netkit.api.background",
    "SyncProxy": "netkit.api.background",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from netkit.api.background import BackgroundLoop as BackgroundLoop
    from netkit.api.background import SyncProxy as SyncProxy
    from netkit.api.bench import BenchResult as BenchResult
    from netkit.api.bench import bench as bench
    from netkit.api.bench import bench_sync as bench_sync
    from netkit.api.faults import FaultControls as FaultControls
    from netkit.api.proxy import LoadBalancer as LoadBalancer
    from netkit.api.proxy import Proxy as Proxy
    from netkit.api.proxy import RelayTotals as RelayTotals
    from netkit.api.proxy import load_balancer as load_balancer
    from netkit.api.proxy import proxy as proxy
    from netkit.api.servers import EchoServer as EchoServer
    from netkit.api.servers import Listening as Listening
    from netkit.api.servers import StreamListener as StreamListener
    from netkit.api.servers import UDPEchoServer as UDPEchoServer
    from netkit.api.servers import echo_server as echo_server
    from netkit.api.servers import udp_echo_server as udp_echo_server
    from netkit.api.udp_proxy import UDPProxy as UDPProxy
    from netkit.api.udp_proxy import udp_proxy as udp_proxy
    from netkit.api.websocket import WebSocket as WebSocket
    from netkit.api.websocket import WebSocketServer as WebSocketServer
    from netkit.api.websocket import ws_connect as ws_connect
    from netkit.api.websocket import ws_server as ws_server
    from netkit.core.datagram_faults import BurstLoss as BurstLoss
    from netkit.core.datagram_faults import Corrupt as Corrupt
    from netkit.core.datagram_faults import DropFirst as DropFirst
    from netkit.core.datagram_faults import Duplicate as Duplicate
    from netkit.core.datagram_faults import Loss as Loss
    from netkit.core.datagram_faults import Rate as Rate
    from netkit.core.datagram_faults import Reorder as Reorder
    from netkit.core.datagram_faults import Truncate as Truncate
    from netkit.core.faults import AcceptDelay as AcceptDelay
    from netkit.core.faults import Bandwidth as Bandwidth
    from netkit.core.faults import BlackholeAfter as BlackholeAfter
    from netkit.core.faults import Fault as Fault
    from netkit.core.faults import Latency as Latency
    from netkit.core.faults import LimitData as LimitData
    from netkit.core.faults import Refuse as Refuse
    from netkit.core.faults import ResetAfter as ResetAfter
    from netkit.core.faults import Slice as Slice
    from netkit.core.faults import SlowClose as SlowClose
    from netkit.errors import BindError as BindError
    from netkit.errors import CheckFailed as CheckFailed
    from netkit.errors import ConfigError as ConfigError
    from netkit.errors import ConnectError as ConnectError
    from netkit.errors import ConnectionLost as ConnectionLost
    from netkit.errors import EndpointError as EndpointError
    from netkit.errors import FaultExists as FaultExists
    from netkit.errors import LocalError as LocalError
    from netkit.errors import LocalProtocolError as LocalProtocolError
    from netkit.errors import NetkitError as NetkitError
    from netkit.errors import NetworkError as NetworkError
    from netkit.errors import NoSuchFault as NoSuchFault
    from netkit.errors import OperationTimeout as OperationTimeout
    from netkit.errors import PeerProtocolError as PeerProtocolError
    from netkit.errors import ResourceExhausted as ResourceExhausted
    from netkit.errors import TLSError as TLSError
    from netkit.errors import UsageError as UsageError
    from netkit.net.tls import ClientTLS as ClientTLS
    from netkit.net.tls import ServerTLS as ServerTLS

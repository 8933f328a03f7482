"""Fuzz the WebSocket frame and handshake parsers for a bounded time.

    python tools/fuzz.py                              # both targets, 60 s each
    python tools/fuzz.py --target frames --seconds 600
    python tools/fuzz.py --engine hypothesis          # without atheris
    python tools/fuzz.py --target frames --reproduce fuzz-crashes/frames-crash-0a1b...

Engines: ``atheris`` (libFuzzer, coverage-guided; ``pip install atheris``) when it imports,
otherwise ``hypothesis`` with a time budget. Each target runs for ``--seconds``, in a child
process for atheris. Both start from a seed corpus of valid frame streams, requests and
responses, and atheris gets a dictionary of the protocol's words.

A finding is any exception other than the protocol's own errors (``PeerProtocolError`` and its
subclasses, from the parsers that may raise it) or a broken invariant: the outcome of parsing
must not depend on how the input is split into reads, the server handshake never raises, and a
:class:`~netkit.core.ws.protocol.Protocol` never raises at all. The input is written to
``--out`` as ``TARGET-crash-SHA1`` and the script exits 1; 0 means nothing was found.

Not part of the test suite: ``tests/core/test_fuzz_*.py`` hold the properties that CI runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Targets import netkit lazily (inside functions) so that atheris can instrument it first.
TARGETS = ("frames", "handshake")
INSTRUMENTED = (
    "netkit.errors",
    "netkit.core.buffers",
    "netkit.core.ws.mask",
    "netkit.core.ws.frames",
    "netkit.core.ws.deflate",
    "netkit.core.ws.handshake",
    "netkit.core.ws.protocol",
)
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
# Longest input tried. Frame headers are at most 14 bytes and every rule is checked from them,
# so short inputs find as much and run faster; heads need room for several header lines.
MAX_LEN = {"frames": 1024, "handshake": 4096}

# --- targets: bytes in, an exception out when something is wrong --------------------------


def _cuts(data: bytes, seed: int) -> list[bytes]:
    """Split ``data`` into reads, deterministically from ``seed``: in two, or in small steps."""
    if seed & 1:
        cut = (seed >> 1) % (len(data) + 1)
        return [data[:cut], data[cut:]]
    step = (seed >> 1) % 8 + 1  # 1: byte by byte
    return [data[i : i + step] for i in range(0, len(data), step)] or [data]


class _FixedKeys:
    """Deterministic masking keys, so that what a protocol sends can be compared."""

    def __init__(self) -> None:
        self._n = 0x37FA213D

    def next(self) -> bytes:
        self._n = (self._n * 1103515245 + 12345) & 0xFFFFFFFF
        return self._n.to_bytes(4, "big")


def _frame_parser_outcome(make: Callable[[], Any], chunks: list[bytes]) -> tuple[Any, ...]:
    from netkit.core.buffers import ReceiveBuffer
    from netkit.errors import PeerProtocolError

    parser, buf = make(), ReceiveBuffer()
    frames: list[tuple[int, bytes, bool, bool]] = []
    try:
        for chunk in chunks:
            buf.extend(chunk)
            while True:
                before = len(buf)
                try:
                    needed = parser.needed(buf)
                except PeerProtocolError:
                    needed = None
                frame = parser.parse(buf)
                if frame is None:
                    if needed is None or needed <= before:
                        raise AssertionError(f"needed()={needed} with {before} bytes buffered")
                    break
                if needed is not None and before - len(buf) != needed:
                    raise AssertionError(f"needed()={needed}, frame took {before - len(buf)}")
                frames.append((frame.opcode, bytes(frame.payload), frame.fin, frame.rsv1))
    except PeerProtocolError as exc:
        if exc.close_code not in (1002, 1009):
            raise AssertionError(f"close code {exc.close_code} from the frame parser") from exc
        return (frames, type(exc).__name__, exc.close_code, str(exc))
    return (frames, None, len(buf))


def _protocol_outcome(make: Callable[[], Any], chunks: list[bytes]) -> tuple[Any, ...]:
    from netkit.core.ws.events import ConnectionClosed, Message

    proto = make()
    events: list[Any] = []
    sent = bytearray()
    for chunk in chunks:
        proto.receive_data(chunk)  # must never raise
        for e in proto.events_received():
            if isinstance(e, Message):
                events.append(("message", bytes(e.data), e.text))
            elif isinstance(e, ConnectionClosed):
                events.append(("closed", e.code, e.reason))
            else:
                events.append(e)
        sent += b"".join(bytes(b) for b in proto.data_to_send())
    proto.receive_eof()
    events += [(type(e).__name__, getattr(e, "code", None)) for e in proto.events_received()]
    error = None if proto.error is None else proto.error.close_code
    if error is not None and (error not in (1002, 1007, 1009) or proto.close_sent is None):
        raise AssertionError(f"failed with close code {error}, close sent: {proto.close_sent}")
    return (events, bytes(sent), error, proto.close_received)


def fuzz_frames(data: bytes) -> None:
    """FrameParser and Protocol on arbitrary bytes: the first two bytes choose the settings."""
    from netkit.core.ws.deflate import DeflateParams
    from netkit.core.ws.frames import FrameParser, Side
    from netkit.core.ws.protocol import Protocol

    if len(data) < 2:
        return
    flags, seed, stream = data[0], data[1], data[2:]
    side = Side.SERVER if flags & 1 else Side.CLIENT
    rsv1 = bool(flags & 2)
    max_size = (None, 0, 125, 300, 65536)[(flags >> 2) % 5]
    deflate = DeflateParams() if flags & 0x20 else None

    def parser() -> FrameParser:
        return FrameParser(side, max_size=max_size, rsv1_allowed=rsv1)

    whole = _frame_parser_outcome(parser, [stream])
    split = _frame_parser_outcome(parser, _cuts(stream, seed))
    if split != whole:
        raise AssertionError(f"frame parser: split {split!r} != whole {whole!r}")

    def protocol() -> Protocol:
        return Protocol(side, max_size=max_size, deflate=deflate, keys=_FixedKeys())

    whole = _protocol_outcome(protocol, [stream])
    split = _protocol_outcome(protocol, _cuts(stream, seed))
    if split != whole:
        raise AssertionError(f"protocol: split {split!r} != whole {whole!r}")


def _server_outcome(server: Any, chunks: list[bytes]) -> tuple[Any, ...]:
    from netkit.core.buffers import ReceiveBuffer
    from netkit.core.ws.events import Rejected

    buf, result = ReceiveBuffer(), None
    for chunk in chunks:
        buf.extend(chunk)
        if result is None:
            result = server.receive_request(buf)  # must never raise
    if result is None:
        return (None, bytes(buf.view()))
    if isinstance(result, Rejected) and result.status_code not in (400, 403, 404, 426):
        raise AssertionError(f"rejected with status {result.status_code}")
    return (type(result).__name__, result.response, bytes(buf.view()))


def _client_outcome(client: Any, chunks: list[bytes]) -> tuple[Any, ...]:
    from netkit.core.buffers import ReceiveBuffer
    from netkit.core.ws.http import InvalidHandshake

    buf = ReceiveBuffer()
    try:
        for chunk in chunks:
            buf.extend(chunk)
            if (answer := client.receive_response(buf)) is not None:
                return ("ok", answer.subprotocol, answer.deflate, bytes(buf.view()))
    except InvalidHandshake as exc:  # UpgradeRefused included
        if exc.close_code is not None:
            raise AssertionError(f"handshake error with close code {exc.close_code}") from exc
        return ("invalid", type(exc).__name__, str(exc))
    return ("incomplete",)


def fuzz_handshake(data: bytes) -> None:
    """Server and client handshake parsers, and the extension header parser, on any bytes."""
    from netkit.core.ws.client import ClientHandshake
    from netkit.core.ws.deflate import DeflateParams, accept_offer
    from netkit.core.ws.http import InvalidHandshake, parse_extension_header
    from netkit.core.ws.server import ServerHandshake

    if len(data) < 2:
        return
    flags, seed, head = data[0], data[1], data[2:]
    deflate = DeflateParams(client_max_window_bits=10) if flags & 1 else None
    server = ServerHandshake(
        paths={"/chat"} if flags & 2 else None,
        origins={"http://ok.test", None} if flags & 4 else None,
        subprotocols=["chat", "superchat"] if flags & 8 else (),
        deflate=deflate,
        health_path="/health" if flags & 16 else None,
    )
    whole = _server_outcome(server, [head])
    split = _server_outcome(server, _cuts(head, seed))
    if split != whole:
        raise AssertionError(f"server: split {split!r} != whole {whole!r}")

    client = ClientHandshake(
        "example.test",
        "/chat",
        subprotocols=["chat"] if flags & 8 else (),
        deflate=deflate,
        key=KEY,
    )
    whole = _client_outcome(client, [head])
    split = _client_outcome(client, _cuts(head, seed))
    if split != whole:
        raise AssertionError(f"client: split {split!r} != whole {whole!r}")

    try:
        offers = parse_extension_header([head.decode("latin-1")])
    except InvalidHandshake:
        return
    accept_offer(offers, deflate)  # declines bad offers, never raises


TARGET_FUNCTIONS: dict[str, Callable[[bytes], None]] = {
    "frames": fuzz_frames,
    "handshake": fuzz_handshake,
}

# --- seeds and dictionary ------------------------------------------------------------------


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from: the fuzzers mutate these."""
    from netkit.core.buffers import ReceiveBuffer
    from netkit.core.ws.client import ClientHandshake
    from netkit.core.ws.deflate import DeflateParams
    from netkit.core.ws.frames import Side
    from netkit.core.ws.protocol import Protocol
    from netkit.core.ws.server import ServerHandshake

    out: list[bytes] = []
    if target == "frames":
        for flags, sender in ((0x00, Side.SERVER), (0x01, Side.CLIENT), (0x23, Side.CLIENT)):
            deflate = DeflateParams() if flags & 0x20 else None
            peer = Protocol(sender, deflate=deflate)
            peer.send_text("Hello, wörld " * 3, fragment_size=7)
            peer.send_ping(b"ping")
            peer.send_binary(bytes(range(200)))
            peer.send_binary(b"x" * 300, fragment_size=100, compress=False)
            peer.send_close(1000, "bye")
            out.append(bytes([flags, 0x05]) + b"".join(bytes(b) for b in peer.data_to_send()))
        return out
    for flags in (0x00, 0x01, 0x0F, 0x1F):
        deflate = DeflateParams(client_max_window_bits=10) if flags & 1 else None
        client = ClientHandshake(
            "example.test",
            "/chat",
            origin="http://ok.test",
            subprotocols=["chat", "superchat"],
            deflate=deflate,
            key=KEY,
        )
        request = client.request()
        out.append(bytes([flags, 0x06]) + request + b"\x81\x80\x00\x00\x00\x00")
        buf = ReceiveBuffer()
        buf.extend(request)
        server = ServerHandshake(subprotocols=["chat"], deflate=deflate)
        result = server.receive_request(buf)
        if result is not None:
            out.append(bytes([flags, 0x09]) + result.response)
    out.append(b"\x10\x00GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    out.append(b"\x00\x00permessage-deflate; client_max_window_bits=10; server_no_context_takeover")
    return out


DICTIONARY = [
    "\r\n", "\r\n\r\n", ": ", ", ", "; ", "=", '"', "GET ", " HTTP/1.1", "HTTP/1.1 101 ",
    "Upgrade", "websocket", "Connection", "Host", "Origin", "Sec-WebSocket-Key",
    "Sec-WebSocket-Version", "13", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions", "permessage-deflate", "server_no_context_takeover",
    "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits",
    KEY, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
]  # fmt: skip


def _dictionary_file(directory: Path) -> Path:
    path = directory / "handshake.dict"
    lines = []
    for word in DICTIONARY:
        escaped = "".join(
            c if c.isalnum() or c in " :;,=+/-_." else f"\\x{ord(c):02x}" for c in word
        )
        lines.append(f'"{escaped}"')
    path.write_text("\n".join(lines) + "\n")
    return path


# --- engines -------------------------------------------------------------------------------


def _save(out: Path, target: str, data: bytes) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{target}-crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def run_atheris(
    target: str, seconds: int, out: Path, corpus: Path | None
) -> tuple[int, list[Path]]:
    """Run libFuzzer in a child process; return (executions, crash files)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"netkit-fuzz-{target}-") as tmp:
        corpus_dir = corpus or Path(tmp) / "corpus"
        corpus_dir.mkdir(parents=True, exist_ok=True)
        for seed in seeds(target):
            (corpus_dir / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
        before = set(out.glob(f"{target}-*"))
        args = [
            sys.executable,
            __file__,
            "--atheris-child",
            target,
            str(corpus_dir),
            f"-max_total_time={seconds}",
            f"-max_len={MAX_LEN[target]}",
            "-timeout=10",
            f"-artifact_prefix={out}/{target}-",
            "-print_final_stats=1",
        ]
        if target == "handshake":
            args.append(f"-dict={_dictionary_file(Path(tmp))}")
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
        log = proc.stdout + proc.stderr
        (out / f"{target}-last-run.log").write_text(log)
        match = re.search(r"stat::number_of_executed_units:\s*(\d+)", log) or re.search(
            r"Done (\d+) runs", log
        )
        execs = int(match.group(1)) if match else 0
        crashes = sorted(set(out.glob(f"{target}-*")) - before - {out / f"{target}-last-run.log"})
        if proc.returncode != 0 and not crashes:
            tail = "\n".join(log.splitlines()[-30:])
            raise SystemExit(f"atheris exited with {proc.returncode} and no crash file:\n{tail}")
        if crashes:
            print("\n".join(line for line in log.splitlines()[-40:]), file=sys.stderr)
        return execs, crashes


def _atheris_child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris  # type: ignore[import-not-found]

    # Coverage feedback comes from instrumented bytecode: netkit must be imported in here.
    with atheris.instrument_imports(include=["netkit"]):
        for module in INSTRUMENTED:
            importlib.import_module(module)
    function = TARGET_FUNCTIONS[target]
    atheris.Setup([sys.argv[0], *libfuzzer_args], function)
    atheris.Fuzz()


def run_hypothesis(target: str, seconds: int, out: Path) -> tuple[int, list[Path]]:
    """Random and mutated-seed inputs until the time is up; the first failure is shrunk."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    function = TARGET_FUNCTIONS[target]
    base = seeds(target)

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(base)))
        for _ in range(draw(st.integers(0, 8))):
            pos = draw(st.integers(0, len(data)))
            action = draw(st.integers(0, 3))
            if action == 0 and pos < len(data):
                data[pos] = draw(st.integers(0, 255))
            elif action == 1 and pos < len(data):
                del data[pos : pos + draw(st.integers(1, 8))]
            elif action == 2:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            else:
                other = draw(st.sampled_from(base))
                data[pos:] = other[draw(st.integers(0, len(other))) :]
        return bytes(data[: MAX_LEN[target]])

    deadline = time.monotonic() + seconds
    execs = 0
    last = b""
    failing = False

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.binary(max_size=MAX_LEN[target]), mutated()))
    def batch(data: bytes) -> None:
        nonlocal execs, last, failing
        if time.monotonic() > deadline and not failing:
            return  # out of time: let the batch run out quickly (shrinking goes on regardless)
        execs += 1
        last = data
        try:
            function(data)
        except Exception:
            failing = True
            raise

    while time.monotonic() < deadline:
        try:
            batch()
        except Exception:
            # Hypothesis replays the shrunk example last before raising: it is in ``last``.
            import traceback

            traceback.print_exc()
            return execs, [_save(out, target, last)]
    return execs, []


def _reproduce(target: str, path: Path) -> int:
    data = path.read_bytes()
    try:
        TARGET_FUNCTIONS[target](data)
    except Exception:
        import traceback

        traceback.print_exc()
        return 1
    print(f"{path}: no failure")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, fuzz each target for its time budget, report and exit 1 on a finding."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--atheris-child"]:
        _atheris_child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seconds", type=int, default=60, help="time per target (default 60)")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"), help="where findings go")
    parser.add_argument("--corpus", type=Path, help="atheris: keep the corpus here between runs")
    parser.add_argument("--reproduce", type=Path, help="run the target once on this input")
    args = parser.parse_args(argv)
    if args.seconds < 1:
        parser.error("--seconds must be at least 1")
    targets = TARGETS if args.target == "all" else (args.target,)
    if args.reproduce is not None:
        if args.target == "all":
            parser.error("--reproduce needs --target frames or --target handshake")
        return _reproduce(args.target, args.reproduce)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # type: ignore[import-not-found]  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    found: list[Path] = []
    for target in targets:
        started = time.monotonic()
        if engine == "atheris":
            corpus = args.corpus / target if args.corpus else None
            execs, crashes = run_atheris(target, args.seconds, args.out, corpus)
        else:
            execs, crashes = run_hypothesis(target, args.seconds, args.out)
        took = time.monotonic() - started
        rate = execs / took if took > 0 else 0.0
        status = f"{len(crashes)} finding(s)" if crashes else "nothing found"
        print(f"{target}: {engine}, {execs} executions in {took:.0f} s ({rate:.0f}/s): {status}")
        for path in crashes:
            print(
                f"  {path}  (reproduce: python {sys.argv[0]} --target {target} --reproduce {path})"
            )
        found += crashes
    return 1 if found else 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())

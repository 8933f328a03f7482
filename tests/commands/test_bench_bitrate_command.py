"""``netkit bench udp://... -b`` against ``netkit udp-echo serve --mode sink``, both as
subprocesses on loopback: the receiver's counts in --json, --fail-if on loss and jitter,
``bench merge`` of two saved runs, and the errors of misused flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netkit.status import ExitStatus
from tests.commands.conftest import assert_one_line_error, json_lines, run_netkit


def summary(stdout: str) -> dict[str, Any]:
    return next(e for e in json_lines(stdout) if e.get("event") == "summary")


def test_loss_of_a_dropping_sink_is_exact_and_gates_the_run(netkit_server: Any) -> None:
    server = netkit_server(
        "udp-echo", "serve", "127.0.0.1:0", "--mode", "sink", "--drop-every", "4"
    )
    url = server.listening["url"]
    args = ("bench", url, "-b", "2M", "-n", "200", "-s", "500", "-c", "1", "-w", "1", "--json")
    held = run_netkit(*args, "--fail-if", "jitter_ms>50")
    assert held.returncode == 0, held.stderr
    d = summary(held.stdout)["datagrams"]
    assert (d["sent"], d["received"], d["lost"], d["loss_pct"]) == (200, 150, 50, 25.0)
    assert d["target_bitrate"] == 2e6 and d["streams"] == 1
    crossed = run_netkit(*args, "--fail-if", "loss_pct>1")
    assert crossed.returncode == 1
    s = summary(crossed.stdout)
    assert s["thresholds"] == [{"expr": "loss_pct>1", "value": 25.0, "crossed": True}]
    assert server.stop() == 0
    sink = server.event("summary")
    assert sink["starts"] == 2 and sink["dropped_on_purpose"] == 100 and sink["mode"] == "sink"


def test_reverse_counts_what_the_sink_sent_here(netkit_server: Any) -> None:
    server = netkit_server(
        "udp-echo", "serve", "127.0.0.1:0", "--mode", "sink", "--drop-every", "4"
    )
    r = run_netkit("bench", server.listening["url"], "-b", "2M", "-R", "-d", "0.5s", "-s", "500",
                   "-c", "1", "-w", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr  # loss fails a run only through --fail-if
    d = summary(r.stdout)["datagrams"]
    assert d["sent"] > 100 and d["lost"] == d["sent"] // 4 and d["streams"] == 1
    assert summary(r.stdout)["direction"] == "reverse"


def test_forward_and_reverse_runs_do_not_merge(netkit_server: Any, tmp_path: Path) -> None:
    server = netkit_server("udp-echo", "serve", "127.0.0.1:0", "--mode", "sink")
    files = []
    for name, way in (("forward.json", []), ("reverse.json", ["-R"])):
        r = run_netkit("bench", server.listening["url"], "-b", "1M", "-d", "0.3s", "-s", "200",
                       "-w", "1", "-c", "1", "--json", *way)  # fmt: skip
        assert r.returncode == 0, r.stderr
        (tmp_path / name).write_text(r.stdout)
        files.append(str(tmp_path / name))
    merged = run_netkit("bench", "merge", *files)
    assert merged.returncode == ExitStatus.USAGE, merged.stdout
    assert "different directions: forward, reverse" in merged.stderr
    assert_one_line_error(merged.stderr)


def test_saved_runs_merge(netkit_server: Any, tmp_path: Path) -> None:
    server = netkit_server("udp-echo", "serve", "127.0.0.1:0", "--mode", "sink")
    files = []
    for name in ("a.json", "b.json"):
        r = run_netkit("bench", server.listening["url"], "-b", "1M", "-n", "50", "-s", "200",
                       "-w", "1", "-c", "1", "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        (tmp_path / name).write_text(r.stdout)
        files.append(str(tmp_path / name))
    merged = run_netkit("bench", "merge", *files, "--json", "--fail-if", "lost>0")
    assert merged.returncode == 0, merged.stderr
    d = summary(merged.stdout)["datagrams"]
    assert (d["sent"], d["received"], d["streams"], d["target_bitrate"]) == (100, 100, 2, 2e6)
    table = run_netkit("bench", "merge", *files)
    assert "0.000%" in table.stdout and "jitter" in table.stdout


def test_bitrate_needs_a_udp_target() -> None:
    r = run_netkit("bench", "127.0.0.1:9", "-b", "1M", "-d", "1s")
    assert r.returncode == 2
    assert_one_line_error(r.stderr)
    assert "udp://" in r.stderr


def test_bad_bitrate_and_scenario_are_refused() -> None:
    for args, words in (
        (("-b", "lots"), "bitrate"),
        (("-b", "1M", "--scenario", "stream"), "--scenario"),
        (("-b", "1M", "--rate", "100"), "rate"),
        (("--fail-if", "loss_pct>1"), "-b/--bitrate"),
    ):
        r = run_netkit("bench", "udp://127.0.0.1:9", *args, "-d", "1s")
        assert r.returncode == 2, r.stderr
        assert_one_line_error(r.stderr)
        assert words in r.stderr

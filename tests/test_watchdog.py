"""The watchdog beside nginx: its rules, its probe against real servers, and the
process itself run as the hosts mode will run it, from nothing but a balancer
spec, over a real nginx and replicas that are frozen and thawed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shop.cluster import nginxconf, procs, watchdog
from shop.cluster.timeline import EventLog
from shop.cluster.watchdog import Health, Probe, probe, verdict

READY, UNREADY = Probe(True, True, 0.01, "ready"), Probe(False, True, 0.01, "HTTP 503")
SILENT = Probe(False, False, 0.5, "no answer within 0.5 s")

# A stand-in replica in its own process (so it can be frozen): 200 on every GET,
# or the status given as its second argument, and its name in X-Served-By.
REPLICA = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(int(sys.argv[2]))
        self.send_header("X-Served-By", sys.argv[1])
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Handler).serve_forever()
"""


def health(*probes: Probe, fall: int = 2, rise: int = 2) -> Health:
    h = Health()
    for result in probes:
        h.record(result, fall=fall, rise=rise)
    return h


def test_one_slow_probe_changes_nothing_two_take_a_replica_out_two_bring_it_back() -> None:
    h = Health()
    assert not h.record(SILENT, fall=2, rise=2) and h.passing
    assert not h.record(READY, fall=2, rise=2) and h.passing  # the streak starts again
    assert not h.record(SILENT, fall=2, rise=2)
    assert h.record(SILENT, fall=2, rise=2) and not h.passing
    assert not h.record(READY, fall=2, rise=2) and not h.passing
    assert h.record(READY, fall=2, rise=2) and h.passing


def test_failing_replicas_go_out_while_another_passes() -> None:
    out, note = verdict({"a": health(READY), "b": health(SILENT, SILENT), "c": health(UNREADY,
                         UNREADY)})  # fmt: skip
    assert out == {"b", "c"} and note == ""


def test_a_replica_on_its_way_back_is_not_taken_out_again() -> None:
    # All were failing (the store was down), so all stayed in; now "a" has passed
    # twice and "b" once: "b" is coming back, taking it out would only flap.
    recovering = health(UNREADY, UNREADY, READY)
    assert not recovering.passing
    assert verdict({"a": health(UNREADY, UNREADY, READY, READY), "b": recovering}) == (set(), "")
    # Out already, it stays out until it has passed twice.
    assert verdict({"a": health(READY), "b": recovering}, out_now=["b"]) == ({"b"}, "")


def test_when_no_replica_passes_those_that_answer_stay_in() -> None:
    # The store is down: every replica says 503. nginx's 502 for all would be worse.
    out, note = verdict({"a": health(UNREADY, UNREADY), "b": health(UNREADY, UNREADY)})
    assert out == set() and "all answer 503" in note
    # One of them is also hung: it goes, the ones that answer stay.
    out, note = verdict({"a": health(UNREADY, UNREADY), "b": health(SILENT, SILENT)})
    assert out == {"b"} and "stay in rotation" in note
    # None answers at all: nothing better than keeping them all.
    out, note = verdict({"a": health(SILENT, SILENT), "b": health(SILENT, SILENT)})
    assert out == set() and "no replica answers" in note


@pytest.fixture
def replica_process() -> Iterator:
    """Start stand-in replicas: `start(name, status)` -> (process, port); all stopped after."""
    started: list[subprocess.Popen] = []

    def start(name: str, status: int = 200) -> tuple[subprocess.Popen, int]:
        port = procs.free_port()
        proc = subprocess.Popen([sys.executable, "-c", REPLICA, name, str(status), str(port)])
        started.append(proc)
        procs.wait_until(lambda: procs.port_is_open(port), timeout=15, what=name)
        return proc, port

    try:
        yield start
    finally:
        for proc in started:
            procs.stop_process(proc.pid, timeout=5, group=False)


def test_the_probe_tells_ready_unready_hung_and_dead_apart(replica_process) -> None:
    _, ready = replica_process("ready")
    _, unready = replica_process("unready", 503)
    hung, hung_port = replica_process("hung")
    os.kill(hung.pid, signal.SIGSTOP)
    assert probe(f"127.0.0.1:{ready}", 0.5).ok
    result = probe(f"127.0.0.1:{unready}", 0.5)
    assert not result.ok and result.answered and "503" in result.reason
    result = probe(f"127.0.0.1:{hung_port}", 0.5)
    assert not result.ok and not result.answered and 0.45 <= result.seconds < 1.0
    result = probe(f"127.0.0.1:{procs.free_port()}", 0.5)
    assert not result.answered and result.reason == "connection refused"


def test_the_watchdog_runs_from_a_spec_alone_and_keeps_nginx_in_step(
    tmp_path: Path, replica_process
) -> None:
    """As hosts mode runs it: a balancer spec (explicit paths, addresses, journal)
    saved by whoever started nginx, then `python -m shop.cluster.watchdog SPEC`."""
    one, one_port = replica_process("one")
    two, two_port = replica_process("two")
    (tmp_path / "logs").mkdir()
    port = procs.free_port()
    balancer = nginxconf.configure(
        nginxconf.Balancer(
            settings=nginxconf.local_settings(
                prefix=tmp_path, listen=f"127.0.0.1:{port}",
                servers=[f"127.0.0.1:{one_port}", f"127.0.0.1:{two_port}"],
                log_dir=tmp_path / "logs",
            ),
            replicas={"one": f"127.0.0.1:{one_port}", "two": f"127.0.0.1:{two_port}"},
            prefix=tmp_path, conf=tmp_path / "nginx.conf", error_log=tmp_path / "logs" / "e.log",
            events=tmp_path / "events.jsonl",
        )
    )  # fmt: skip
    nginx = procs.spawn(balancer.argv(), log_path=tmp_path / "logs" / "nginx.out")
    guard = procs.spawn(watchdog.argv(balancer.spec_file), log_path=tmp_path / "logs" / "wd.log")
    url = f"http://127.0.0.1:{port}/readyz"

    def out() -> list[str]:
        return nginxconf.Balancer.load(balancer.spec_file).out

    def served() -> set[str]:
        return {requests.get(url, timeout=10).headers["X-Served-By"] for _ in range(6)}

    try:
        procs.wait_until(lambda: watchdog.read_status(balancer), timeout=30, what="the watchdog")
        os.kill(two.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        procs.wait_until(lambda: out() == ["two"], timeout=10, what="two out of rotation")
        took_out = time.monotonic() - frozen
        assert "backup;" in balancer.conf.read_text()
        assert served() == {"one"}  # nobody waits on the frozen one any more
        os.kill(two.pid, signal.SIGCONT)
        thawed = time.monotonic()
        procs.wait_until(lambda: out() == [], timeout=10, what="two back in rotation")
        put_back = time.monotonic() - thawed
        procs.wait_until(lambda: served() == {"one", "two"}, timeout=10, what="two serving")
        print(f"\nout {took_out:.2f} s after the freeze, back {put_back:.2f} s after the thaw")
        assert took_out < 3.0 and put_back < 3.0
        decisions = [d["text"] for d in watchdog.read_status(balancer)["decisions"]]
        assert any(d.startswith("two OUT of rotation: no answer") for d in decisions)
        assert any(d.startswith("two back IN rotation") for d in decisions)
        labels = [e.label for e in EventLog(tmp_path / "events.jsonl").read()]
        assert labels == ["two out of rotation", "two back in rotation"]
    finally:
        os.kill(two.pid, signal.SIGCONT)
        procs.stop_process(guard.pid, timeout=10)
        procs.stop_process(nginx.pid, timeout=10)
    assert "stopping" in (tmp_path / "logs" / "wd.log").read_text()  # SIGTERM: a clean exit


def test_a_scale_saved_while_the_watchdog_takes_a_replica_out_is_adopted(
    tmp_path: Path, replica_process
) -> None:
    """The launcher's `scale` and the watchdog write the same spec, under one lock:
    a replica the launcher adds between the watchdog's reading of the spec and its
    own `take_out` comes back to the watchdog with that take_out, and is watched
    from then on (it once came unrecorded, and the next round died on it)."""
    ports = {name: replica_process(name)[1] for name in ("one", "two", "three")}
    (tmp_path / "logs").mkdir()

    def saved(*names: str) -> nginxconf.Balancer:  # as the launcher saves it
        servers = {name: f"127.0.0.1:{ports[name]}" for name in names}
        return nginxconf.configure(
            nginxconf.Balancer(
                settings=nginxconf.local_settings(
                    prefix=tmp_path, listen=f"127.0.0.1:{procs.free_port()}",
                    servers=list(servers.values()), log_dir=tmp_path / "logs",
                ),
                replicas=servers, prefix=tmp_path, conf=tmp_path / "nginx.conf",
                error_log=tmp_path / "logs" / "e.log",
            )
        )  # fmt: skip

    guard = watchdog.Watchdog(saved("one", "two").spec_file)
    saved("one", "two", "three")  # `scale 3`, before the watchdog's next round
    guard.apply({"two"})
    assert set(guard.health) == {"one", "two", "three"}
    assert nginxconf.Balancer.load(guard.spec_file).out == ["two"]
    guard.round()  # probes all three, "two" among them ready again
    assert set(guard.health) == {"one", "two", "three"}
    assert any(d["text"] == "now watching one, two, three" for d in guard.decisions)

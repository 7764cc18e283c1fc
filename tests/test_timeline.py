"""The timeline of a failure run: the journal of events shared by processes, the
requests of the simulated shoppers, and the chart drawn from both (or, without
matplotlib, the JSON it would be drawn from and a clear word about it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shop.cluster import chart
from shop.cluster.timeline import Event, EventLog, Sample, Timeline

# Appends one event from another process, as `shop-cluster freeze` or the watchdog do.
APPEND = (
    "import sys; from shop.cluster.timeline import EventLog; "
    "log = EventLog(sys.argv[1]); [log.record('kill', f'shop-{i}') for i in range(200)]"
)


def test_events_from_several_processes_are_whole_lines_in_time_order(tmp_path: Path) -> None:
    journal = EventLog(tmp_path / "events.jsonl")
    writers = [
        subprocess.Popen([sys.executable, "-c", APPEND, str(journal.path)]) for _ in range(4)
    ]
    for i in range(200):
        journal.record("freeze", f"shop-{i}", detail="from the test")
    assert all(w.wait(timeout=60) == 0 for w in writers)

    events = journal.read()
    assert len(events) == 5 * 200  # no line lost or torn
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert {e.kind for e in events} == {"kill", "freeze"}
    assert events[0].label == f"{events[0].kind} {events[0].target}"


def test_reading_a_window_skips_torn_lines(tmp_path: Path) -> None:
    journal = EventLog(tmp_path / "events.jsonl")
    first = journal.record("freeze", "shop-2", at=100.0)
    journal.record("thaw", "shop-2", at=200.0)
    with open(journal.path, "a") as out:
        out.write('{"at": 150, "kind": "half a li\n')
    assert journal.read(since=50, until=150) == [first]
    assert [e.kind for e in journal.read(since=150)] == ["thaw"]
    journal.clear()
    assert journal.read() == []


def a_run() -> Timeline:
    samples = [
        Sample(at=1000 + i * 0.1, seconds=0.01, ok=True, status=200, served_by=f"shop-{i % 3 + 1}",
               what="GET /api/cart")
        for i in range(100)
    ]  # fmt: skip
    samples.append(Sample(1003.0, 3.02, True, 201, "shop-1", "POST /api/cart/items"))
    samples.append(Sample(1004.0, 0.5, False, None, None, "GET /api/me"))
    events = [Event(1003.0, "freeze", "shop-2", "freeze shop-2"), Event(1008, "thaw", "shop-2",
              "thaw shop-2")]  # fmt: skip
    return Timeline(samples, events, title="a test run")


def test_a_timeline_survives_json_and_sums_itself_up(tmp_path: Path) -> None:
    run = a_run()
    saved = Timeline.load_json(run.save_json(tmp_path / "run.json"))
    assert saved == run
    assert run.slowest().seconds == 3.02
    assert run.summary() == "102 requests, 1 failed, slowest 3.02 s (at 3.0 s)"


def test_the_chart_is_a_png_beside_its_data(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the chart extra is not installed")
    files = chart.save(a_run(), tmp_path, "freeze")
    assert json.loads(files.json.read_text())["summary"].startswith("102 requests")
    assert files.png is not None and files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(files.png) in files.note


def test_without_matplotlib_the_data_is_kept_and_the_user_told(tmp_path: Path) -> None:
    # A real interpreter in which matplotlib cannot be imported.
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pathlib import Path; from shop.cluster import chart\n"
        "from shop.cluster.timeline import Timeline\n"
        f"files = chart.save(Timeline.load_json(Path({str(tmp_path / 'in.json')!r})), "
        f"Path({str(tmp_path)!r}), 'run')\n"
        "print(files.png); print(files.note)\n"
        "sys.exit(chart.main([str(files.json)]))\n"
    )
    a_run().save_json(tmp_path / "in.json")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    png, note = result.stdout.splitlines()
    assert png == "None" and not (tmp_path / "run.png").exists()
    assert (tmp_path / "run.json").exists()
    assert "matplotlib is not installed" in note and "shop-cluster[chart]" in note
    assert result.returncode == 1 and "matplotlib is missing" in result.stderr
    assert "Traceback" not in result.stderr

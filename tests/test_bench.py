"""Smoke test of the benchmark harness: it runs end to end and produces figures.

Behaviour only, never speed: each variant gets about one second of load, and
the test checks that every figure the report needs is there, not its value.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "flask_session", reason="the bench extra is not installed: pip install -e '.[bench]'"
)
pytest.importorskip(
    "matplotlib", reason="the bench extra is not installed: pip install -e '.[bench]'"
)

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"bare", "cookie", "flask_session", "flask_session_norefresh", "sessionstore"}

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed: sudo apt-get install wrk"
)


def bench(*args: str, timeout: float = 200) -> None:
    """The documented command, `python -m bench ...`, run from the repository."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _results(out: Path, name: str) -> dict:
    return json.loads((out / "results" / f"{name}.json").read_text())


@pytest.mark.integration
@pytest.mark.timeout(240)
@needs_wrk
def test_sessions_and_scale_produce_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ["--output-dir", str(out), "--workdir", str(tmp_path / "work")]
    bench("sessions", "--duration", "1", "--reps", "1", "--connections", "8", *common)
    bench("scale", "--counts", "500,1000", *common)

    sessions = _results(out, "sessions")
    for endpoint in ("read", "write"):
        rows = sessions["summary"]["endpoints"][endpoint]
        assert set(rows) == VARIANTS
        for row in rows.values():
            assert row["rps"] > 0 and row["p99_ms"] > 0 and row["errors"] == 0
    # A read of our store: two plain commands in one round trip; a Redis size for each
    # Redis variant.
    read = sessions["round_trips"]["sessionstore"]["read"]
    assert read["sent"] == {"HGETALL": 1.0, "PTTL": 1.0} and read["trips"] == 1
    assert all(sessions["sizes"][v]["redis_bytes"] > 0 for v in sessions["round_trips"])
    assert sessions["summary"]["static"]["rps"] > 0

    scale = _results(out, "scale")
    assert [c["sessions"] for c in scale["checkpoints"]] == [500, 1000]
    assert all(c["bytes_per_session"] > 0 and c["p99_us"] > 0 for c in scale["checkpoints"])

    text = (out / "RESULTS.md").read_text()
    for heading in ("Session variants, side by side", "Targets", "Redis at scale"):
        assert heading in text
    assert (out / "bench-throughput.png").read_bytes().startswith(b"\x89PNG")


def _has_commit(commit: str) -> bool:
    done = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return done.returncode == 0


@pytest.mark.cluster
@pytest.mark.timeout(360)
@needs_wrk
def test_shop_workload_runs_through_the_launcher(tmp_path: Path) -> None:
    from bench.shop import BASELINE_COMMIT

    if shutil.which("git") is None or not _has_commit(BASELINE_COMMIT):
        pytest.skip(f"the baseline commit {BASELINE_COMMIT} is not in this checkout (shallow?)")
    out = tmp_path / "out"
    bench("shop", "--replicas", "1", "--duration", "1", "--reps", "1", "--connections", "8",
          "--output-dir", str(out), "--workdir", str(tmp_path / "work"), timeout=330)  # fmt: skip
    shop = _results(out, "shop")
    assert shop["summary"]["1"]["rps"] > 0
    # The old commit's shop ran beside it, and each version's round trips were counted.
    assert shop["baseline"]["summary"]["1"]["rps"] > 0
    assert set(shop["round_trips"]) == {"current", "baseline"}
    assert all(0 < trips <= 3.5 for trips in shop["round_trips"]["current"].values())
    text = (out / "RESULTS.md").read_text()
    assert "The shop: mixed workload" in text and "Against commit" in text

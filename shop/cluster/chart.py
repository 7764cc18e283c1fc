"""The timeline chart: every request of a failure run as a point of latency against
time, failures in red, every event a labelled vertical line.

matplotlib is optional (the `chart` extra; `./run.sh` installs it): without it
`save` still writes the timeline as JSON and says how to draw it later, with
`python -m shop.cluster.chart TIMELINE.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .timeline import Timeline

INSTALL_HINT = "pip install 'shop-cluster[chart]' (./run.sh installs it)"
# Replicas in a steady order of colours; failures are always red.
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
FAILED = "#d62728"
EVENT_COLOURS = {
    "freeze": "#1f3b73", "thaw": "#2a7f62", "kill": FAILED, "out": "#ff7f0e",
    # hosts (`up --hosts`): machines off and on, the network cut and healed,
    # the virtual IP moving, a Redis failover
    "power-off": FAILED, "power-on": "#2a7f62", "partition": "#6a3d9a", "heal": "#2a7f62",
    "vip": "#1f77b4", "failover": "#8c510a",
}  # fmt: skip


# Events with the same label this close together (seconds) are drawn once.
SAME_EVENT = 2.0


@dataclass(frozen=True)
class ChartFiles:
    """What `save` wrote, and a line to tell the user."""

    json: Path
    png: Path | None
    note: str


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def save(timeline: Timeline, folder: Path, name: str) -> ChartFiles:
    """Write NAME.json (always) and NAME.png (with matplotlib) into `folder`."""
    data = timeline.save_json(Path(folder) / f"{name}.json")
    if not have_matplotlib():
        return ChartFiles(
            data,
            None,
            f"matplotlib is not installed, so no chart was drawn; the timeline is in {data}. "
            f"Install it with: {INSTALL_HINT}, then: python -m shop.cluster.chart {data}",
        )
    png = draw(timeline, data.with_suffix(".png"))
    return ChartFiles(data, png, f"timeline chart: {png}  (data: {data})")


def draw(timeline: Timeline, path: Path) -> Path:
    """Draw `timeline` into the PNG `path` (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here
    import matplotlib.pyplot as plt

    zero = timeline.start
    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    replicas = sorted({s.served_by or "?" for s in timeline.samples if s.ok})
    for index, replica in enumerate(replicas):
        points = [s for s in timeline.samples if s.ok and (s.served_by or "?") == replica]
        ax.scatter(
            [s.at - zero for s in points], [s.seconds for s in points],
            s=7, alpha=0.55, color=PALETTE[index % len(PALETTE)], label=f"served by {replica}",
            linewidths=0,
        )  # fmt: skip
    failed = timeline.failures()
    if failed:
        ax.scatter(
            [s.at - zero for s in failed], [s.seconds for s in failed],
            s=28, marker="x", color=FAILED, label=f"failed ({len(failed)})",
        )  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the start of the run")
    ax.set_ylabel("request latency (s, log scale)")
    top = max([s.seconds for s in timeline.samples] + [1.0]) * 3
    ax.set_ylim(0.001, top)
    span = max([s.at for s in timeline.samples] + [e.at for e in timeline.events] + [zero + 1])
    last_x, level = None, 0
    drawn: dict[str, float] = {}
    for event in sorted(timeline.events, key=lambda e: e.at):
        x = event.at - zero
        # On hosts a watchdog beside each nginx notes the same decision: one line.
        if x - drawn.get(event.label, -SAME_EVENT) < SAME_EVENT:
            continue
        drawn[event.label] = x
        colour = EVENT_COLOURS.get(event.kind, "#555555")
        ax.axvline(x, color=colour, linestyle="--", linewidth=1.1)
        # Labels of events close together are staggered downwards, not overprinted.
        close = last_x is not None and x - last_x < 0.03 * (span - zero)
        level = level + 1 if close else 0
        last_x = x
        ax.text(
            x, top * 0.92 / 6**level, f" {event.label}", rotation=90, va="top", ha="right",
            fontsize=8, color=colour,
        )  # fmt: skip
    slowest = timeline.slowest()
    if slowest is not None:
        ax.annotate(
            f"slowest {slowest.seconds:.2f} s",
            (slowest.at - zero, slowest.seconds),
            xytext=(8, -4), textcoords="offset points", fontsize=8,
        )  # fmt: skip
    title = timeline.title or "timeline"
    ax.set_title(f"{title}\n{timeline.summary()}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, markerscale=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shop.cluster.chart TIMELINE.json [OUT.png]`: draw a saved timeline."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (1, 2):
        print("usage: python -m shop.cluster.chart TIMELINE.json [OUT.png]", file=sys.stderr)
        return 2
    if not have_matplotlib():
        print(f"error: matplotlib is missing; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 1
    source = Path(args[0])
    try:
        timeline = Timeline.load_json(source)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: cannot read {source}: {exc}", file=sys.stderr)
        return 1
    out = draw(timeline, Path(args[1]) if len(args) == 2 else source.with_suffix(".png"))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

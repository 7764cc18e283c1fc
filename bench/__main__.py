"""`python -m bench`: the one command that runs the benchmarks and writes RESULTS.md.

.venv/bin/python -m bench run            # everything (about 25 minutes)
.venv/bin/python -m bench run --quick    # short runs, no callgrind, no million sessions
.venv/bin/python -m bench sessions|shop|instructions|scale [options]   # one section
.venv/bin/python -m bench report         # re-render RESULTS.md and the chart
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import report
from .apps import VARIANTS
from .instructions import run_instructions
from .scale import DEFAULT_COUNTS, ScaleConfig, run_scale
from .sessions import SessionBenchConfig, run_sessions, targets
from .shop import BASELINE_COMMIT, ShopBenchConfig, run_shop

console = Console(log_path=False)


@contextmanager
def live_progress(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current step, and every step logged above it."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(title)

        def step(message: str) -> None:
            bar.update(task, description=f"{title}: {message}")
            bar.console.log(message)

        yield step


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmarks of the session store against its peers and of the shop cluster, "
            "measured side by side in one run (variants interleaved, repeated, medians). "
            "Writes bench/results/*.json, bench/RESULTS.md and docs/bench-throughput.png."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--quick", action="store_true", help="short runs (development, smoke test)")
        sp.add_argument("--duration", type=float, help="seconds per wrk run")
        sp.add_argument("--reps", type=int, help="repetitions (>= 3 for the documented run)")
        sp.add_argument("--connections", type=int, help="wrk connections")
        sp.add_argument(
            "--workdir", type=Path, help="where servers keep files (default: a temp dir)"
        )
        sp.add_argument("--output-dir", type=Path, help=argparse.SUPPRESS)
        sp.add_argument(
            "--no-report", action="store_true", help="do not rewrite RESULTS.md / chart"
        )

    def baseline(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--baseline",
            default=BASELINE_COMMIT,
            metavar="COMMIT",
            help=(
                "a git commit whose shop runs side by side with this tree's, in a worktree "
                f"(default {BASELINE_COMMIT}, before issue 16); '' for none"
            ),
        )

    run = sub.add_parser("run", help="all sections (scale skipped with --quick), then the report")
    common(run)
    baseline(run)
    ses = sub.add_parser("sessions", help="the session variants side by side")
    common(ses)
    ses.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    shop = sub.add_parser("shop", help="the shop's mixed workload through 1..N replicas")
    common(shop)
    baseline(shop)
    shop.add_argument("--replicas", type=_ints, default=(1, 2, 3), help="e.g. 1,2,3")
    ins = sub.add_parser(
        "instructions",
        help="CPU instructions (callgrind) and system calls (strace) per request, in process",
    )
    ins.add_argument("--workdir", type=Path, help="where redis keeps its files (default: temp)")
    ins.add_argument("--output-dir", type=Path, help=argparse.SUPPRESS)
    ins.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    scale = sub.add_parser("scale", help="a million sessions: memory and read latency")
    scale.add_argument("--counts", type=_ints, default=DEFAULT_COUNTS, help="e.g. 10000,100000")
    scale.add_argument("--workdir", type=Path, help="where redis keeps its files (default: temp)")
    scale.add_argument("--output-dir", type=Path, help=argparse.SUPPRESS)
    scale.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    rep = sub.add_parser("report", help="re-render RESULTS.md and the chart from bench/results")
    rep.add_argument("--output-dir", type=Path, help=argparse.SUPPRESS)
    return p


def _override(config, args, **extra):
    from dataclasses import replace

    changes = {k: getattr(args, k) for k in ("duration", "reps", "connections") if getattr(args, k)}
    return replace(config, **changes, **extra)


def do_sessions(args: argparse.Namespace, workdir: Path) -> None:
    base = SessionBenchConfig.quick() if args.quick else SessionBenchConfig()
    variants = tuple(getattr(args, "variants", ",".join(VARIANTS)).split(","))
    config = _override(base, args, variants=variants)
    with live_progress("sessions") as step:
        result = run_sessions(workdir / "sessions", config, step)
    report.save("sessions", result | {"command": args.command_line}, args.results_dir)
    show_sessions(result)


def do_shop(args: argparse.Namespace, workdir: Path) -> None:
    base = ShopBenchConfig(duration=2.0, reps=1) if args.quick else ShopBenchConfig()
    config = _override(
        base,
        args,
        replicas=getattr(args, "replicas", base.replicas),
        baseline=args.baseline or None,
    )
    with live_progress("shop") as step:
        result = run_shop(workdir / "shop", config, step)
    report.save("shop", result | {"command": args.command_line}, args.results_dir)
    table = Table("version", "replicas", "req/s", "p99 ms", "CPU replicas/nginx/redis")
    baseline = result["baseline"] or {}
    for version, summary in (
        ("this tree", result["summary"]),
        (baseline.get("commit"), baseline.get("summary", {})),
    ):
        for n, r in summary.items():
            c = r["cpu"]
            table.add_row(
                version,
                n,
                f"{r['rps']:,.0f}",
                f"{r['p99_ms']:.1f}",
                f"{c['replicas']:.2f}/{c['nginx']:.2f}/{c['redis']:.2f}",
            )
    console.print(table)


def do_instructions(args: argparse.Namespace, workdir: Path) -> None:
    with live_progress("instructions") as step:
        result = run_instructions(workdir / "instructions", step)
    report.save("instructions", result | {"command": args.command_line}, args.results_dir)


def do_scale(args: argparse.Namespace, workdir: Path) -> None:
    with live_progress("scale") as step:
        result = run_scale(workdir / "scale", ScaleConfig(counts=args.counts), step)
    report.save("scale", result | {"command": args.command_line}, args.results_dir)


def show_sessions(result: dict) -> None:
    for endpoint, rows in result["summary"]["endpoints"].items():
        table = Table(
            "variant",
            "req/s",
            "vs bare",
            "p50 ms",
            "p99 ms",
            "cmds/req",
            title=f"{endpoint} (medians)",
        )
        for variant, r in rows.items():
            table.add_row(
                variant,
                f"{r['rps']:,.0f}",
                f"{r['vs_bare']:.2f}x",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['commands_per_request']:g}",
            )
        console.print(table)
    table = Table("target", "measured", "met", title="targets (issue 16)")
    for target, measured, ok in targets(result):
        table.add_row(target, measured, "[green]yes" if ok else "[red]no")
    console.print(table)


def write_report(results_dir: Path, results_md: Path, chart: Path) -> None:
    """RESULTS.md and the chart, from the saved JSON (never from memory)."""
    results_md.write_text(report.render(results_dir))
    sessions = report.load("sessions", results_dir)
    if sessions:
        report.chart(sessions, chart)
    console.log(f"wrote {results_md} and {chart}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.command_line = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    # --output-dir (for the smoke test) sends results, RESULTS.md and the chart elsewhere.
    out = args.output_dir
    args.results_dir = out / "results" if out else report.RESULTS_DIR
    results_md = out / "RESULTS.md" if out else report.RESULTS_MD
    chart = out / "bench-throughput.png" if out else report.CHART
    if args.command == "report":
        write_report(args.results_dir, results_md, chart)
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.command in ("run", "sessions"):
            do_sessions(args, workdir)
        if args.command in ("run", "shop"):
            try:
                do_shop(args, workdir)
            except (RuntimeError, TimeoutError) as exc:
                # The shop is another team's moving target: report, keep the other sections.
                if args.command == "shop":
                    raise
                console.log(f"[red]shop benchmark failed, skipped: {exc}")
        if args.command == "instructions" or (args.command == "run" and not args.quick):
            do_instructions(args, workdir)
        if args.command == "scale" or (args.command == "run" and not args.quick):
            do_scale(args if args.command == "scale" else _scale_args(args), workdir)
    if not args.no_report:
        write_report(args.results_dir, results_md, chart)
    console.log(f"done in {time.monotonic() - started:.0f} s")
    return 0


def _scale_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**vars(args), counts=DEFAULT_COUNTS)


if __name__ == "__main__":
    raise SystemExit(main())

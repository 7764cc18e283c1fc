"""What `shop-cluster` prints: the status table and the merged, prefixed logs.

Everything goes through rich's consoles here; `cli.py` only decides what to say.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shop import scalelog

from .state import Workdir

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def yes_no(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


def alive_cell(proc: dict[str, Any]) -> str:
    """yes, no, or frozen (alive, but stopped: it accepts connections and answers none)."""
    return "[bold yellow]frozen[/]" if proc.get("frozen") else yes_no(proc["alive"])


def _count(value: Any) -> str:
    return "-" if value is None else str(value)


def status_table(status: dict[str, Any]) -> Table:
    """One row per process: the table `up` and `status` print (`status.collect`'s data).

    Request counts come from the replicas' heartbeats (nginx: its stub_status);
    "heartbeat" says whether the replica's heartbeat in Redis is fresh.
    """
    table = Table(title=f"shop cluster at {status['url']}", title_justify="left")
    numeric = ("pid", "port", "requests", "last min")
    # Hosts mode: which host each process runs on (from the hosts' process lists).
    host_of = {p: h["name"] for h in status.get("hosts", []) for p in h["processes"]}
    columns = ("name", *(("host",) if host_of else ()), "pid", "port", "alive", "ready")
    for column in (*columns, "rotation", "heartbeat", *numeric[2:]):
        table.add_column(column, justify="right" if column in numeric else "left")
    redis = status["redis"]
    stores = [*redis["nodes"], *redis["sentinels"]] if redis.get("mode") == "ha" else [redis]
    balancers = status.get("balancers") or [status["nginx"]]
    vrrp = [b["keepalived"] for b in balancers if "keepalived" in b]
    autoscale = status.get("autoscale") or {}
    scaler = [autoscale["process"]] if autoscale.get("process") else []
    guards = status.get("watchdogs", [])
    for proc in [*balancers, *guards, *vrrp, *scaler, *status["replicas"], *stores]:
        beat = proc.get("heartbeat")
        host = (host_of.get(proc["name"], "-"),) if host_of else ()
        table.add_row(
            _store_label(proc), *host, str(proc["pid"] or "-"), str(proc["port"] or "-"),
            alive_cell(proc), yes_no(proc["ready"]), _rotation(proc),
            "" if beat is None else yes_no(beat),
            _count(proc.get("requests")), _count(proc.get("requests_last_minute")),
        )  # fmt: skip
    captions = []
    if redis.get("mode") == "ha":
        captions.append(_ha_caption(redis))
    if host_of:
        holder = next((h["name"] for h in status["hosts"] if h["vip"]), "nobody")
        down = [h["name"] for h in status["hosts"] if not h["up"]]
        captions.append(f"virtual IP held by: {holder}")
        captions.append(f"powered off: {', '.join(down) or 'none'}")
    lines = ["; ".join(captions)] if captions else []
    lines += autoscale_lines(autoscale)
    lines += _watchdog_lines(guards)
    table.caption = "\n".join(lines) or None
    table.caption_justify = "left"
    return table


def autoscale_lines(autoscale: dict[str, Any], decisions: int = 5) -> list[str]:
    """What the autoscaler reads now and its latest decisions, newest first."""
    lines = []
    reading = autoscale.get("reading")
    if reading:
        lines.append(f"autoscaling: {scalelog.summary(reading)}")
    elif autoscale.get("enabled"):
        lines.append("autoscaling: on, but its reading is not in Redis (starting, or Redis down)")
    for decision in autoscale.get("decisions", [])[:decisions]:
        when = time.strftime("%H:%M:%S", time.localtime(decision.get("at", 0)))
        took = decision.get("took")
        took = f" (took {took:.1f} s)" if took is not None else ""
        lines.append(f"  {when} {scalelog.headline(decision)}: {decision.get('reason', '')}{took}")
    return lines


def _rotation(proc: dict[str, Any]) -> str:
    """A replica in nginx's rotation or taken out (by a watchdog); blank for the others."""
    if "in_rotation" not in proc:
        return ""
    return "in" if proc["in_rotation"] else "[bold red]OUT[/]"


def _watchdog_lines(guards: list[dict[str, Any]]) -> list[str]:
    """Each watchdog's standing exception and its latest decisions, newest last."""
    if not guards:
        return ["no watchdog (--no-watchdog): nginx learns of a hung replica from timeouts only"]
    lines = []
    for guard in guards:
        if guard.get("note"):
            lines.append(f"{guard['name']}: {guard['note']}")
        for decision in guard.get("decisions", [])[-3:]:
            when = time.strftime("%H:%M:%S", time.localtime(decision["at"]))
            lines.append(f"{guard['name']} {when}: {decision['text']}")
    return lines


def _ha_caption(redis: dict[str, Any]) -> str:
    """Who is primary now and whether it can take writes (a replica must have them)."""
    caption = (
        f"Redis primary now (per Sentinel): {redis['primary'] or 'none'}; "
        f"replicas in sync: {redis['replicas_in_sync']}"
    )
    if redis["primary"] and redis["replicas_in_sync"] < redis["writes_need"]:
        caption += " [red](writes get 503 until a replica is in sync)[/]"
    return caption


def _store_label(proc: dict[str, Any]) -> str:
    """A name, with an HA node's role (a replica's sync) or a Sentinel's view."""
    if proc.get("role") == "replica":
        return f"{proc['name']} (replica, {replica_sync(proc)})"
    if "role" in proc:
        return f"{proc['name']} ({proc['role']})"
    if "primary_ok" in proc:
        seen = "primary ok" if proc["primary_ok"] else "primary DOWN"
        return f"{proc['name']} ({seen}, {proc['other_sentinels']} peers)"
    return proc["name"]


def replica_sync(node: dict[str, Any]) -> str:
    """"in sync", or why not, for a replica row of `status --json`."""
    if node.get("in_sync"):
        return "in sync"
    if not node.get("link_up"):
        return "link down"
    if node.get("lag_seconds") is None:
        return "syncing"
    return f"lagging {node['lag_seconds']} s, {node['behind_bytes']} bytes behind"


class LogFollower:
    """Streams every log file of the cluster, each line prefixed by its process.

    Offsets are taken when it is created (before `up`), so the startup lines
    are shown too; files that appear later (a replica added by `scale`) are
    picked up as they come.
    """

    COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")
    POLL_SECONDS = 0.2  # how stale a streamed line may be; cheap (a stat per file)

    def __init__(self, workdir: Workdir, out: Console = console) -> None:
        self.workdir = workdir
        self.out = out
        self.offsets: dict[Path, int] = {p: p.stat().st_size for p in self._files() if p.exists()}
        self.colours: dict[str, str] = {}

    def _files(self) -> list[Path]:
        path = self.workdir.path
        return [
            *sorted(self.workdir.log_dir.glob("*.log")),
            self.workdir.redis_dir / "redis.log",
            *sorted(path.glob("redis-*/redis.log")),
            *sorted(path.glob("sentinel-*/sentinel.log")),
        ]

    def _prefix(self, path: Path) -> str:
        # A store's log is named after its folder (redis, redis-1, sentinel-2).
        name = path.parent.name if path.parent != self.workdir.log_dir else path.stem
        colour = self.colours.setdefault(name, self.COLOURS[len(self.colours) % len(self.COLOURS)])
        return f"[{colour}]{name:>12} |[/] "

    def poll(self) -> None:
        for path in self._files():
            try:
                with open(path, "rb") as log:
                    log.seek(self.offsets.get(path, 0))
                    data = log.read()
            except OSError:
                continue
            # Only whole lines; a half-written one waits for the next poll.
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                self.out.print(self._prefix(path), end="")
                self.out.out(line, highlight=False)

    def run(self) -> None:
        """Follow until interrupted (KeyboardInterrupt, also raised on SIGTERM)."""
        try:
            while True:
                self.poll()
                time.sleep(self.POLL_SECONDS)
        finally:
            self.poll()

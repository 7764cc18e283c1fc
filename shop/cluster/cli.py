"""`shop-cluster`: run the whole shop cluster on this machine as plain processes.

Parses arguments, calls `launcher.Cluster` and says what happened (drawing with
`output.py`). Errors the user can act on are one red line and a non-zero exit
code, never a traceback. A new subcommand is a parser in `build_parser`, a
`cmd_*` function here and a method of `Cluster`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import redis

from . import ha, hosts, netns, procs, store
from .launcher import DEFAULT_PORT, DEFAULT_REPLICAS, Cluster
from .output import LogFollower, console, err_console, status_table
from .procs import ClusterError
from .scalepolicy import Policy
from .state import APP_STATES, DEFAULT_WORKDIR, STATE_MEMORY, STATE_REDIS, Workdir

DEFAULT_TARGET = Policy.target
AUTOSCALE_DESCRIPTION = """\
Keep the replicas between MIN and MAX, following the load: an autoscaler
process (recorded with the cluster: `status` shows it, `down` stops it) reads
the requests in flight through nginx every half second and scales with
`scale`, so new replicas join nginx once ready and leaving ones are drained
first. Per replica it aims for --target requests in flight:

  up    when the last 3 s averaged above the target: straight to the replicas
        needed (in flight / target), at most double at once
  down  one replica at a time, once one replica fewer would have carried every
        reading of the last 15 s at 70 % of the target or less, and 10 s
        after the last change
  range a new range applies at once; `off` leaves the replicas as they are

Every decision and its reason: `status`, the cluster page (/cluster) and
WORKDIR/logs/autoscaler.log. While autoscaling is on, `scale` is refused.
Not with --hosts (scaling there would need new hosts)."""

DESCRIPTION = """\
Run the shop cluster locally: redis-server, N gunicorn replicas of the shop
(shop-1 .. shop-N) and nginx in front of them, with a watchdog that takes a
hung replica out of nginx's rotation, all as plain processes on 127.0.0.1,
with configs, pid/state files, logs and data in one work directory. No root
and no Docker needed."""

EPILOG = """\
examples:
  shop-cluster up                      3 replicas behind http://127.0.0.1:8080/
  shop-cluster up --replicas 5 --port 9000 --workdir /tmp/c2
  shop-cluster status                  what runs where, alive and ready
  shop-cluster kill shop-2             crash a replica (SIGKILL of its process group)
  shop-cluster start shop-2            bring it back on the same port
  shop-cluster freeze shop-2           hang a replica (SIGSTOP): connections accepted, no answer
  shop-cluster thaw shop-2             wake it up again (SIGCONT)
  shop-cluster scale 5                 add replicas (or remove them, drained first)
  shop-cluster autoscale 1:4           follow the load between 1 and 4 replicas
  shop-cluster autoscale off           stop following it (the replicas stay)
  shop-cluster up --redis ha           Redis primary + 2 replicas + 3 Sentinels: survives
                                       the loss of any one Redis node, writes included
  shop-cluster kill redis-primary      crash whichever Redis node is primary now (HA)
  shop-cluster start redis-1           bring a Redis node back: it rejoins as a replica
  shop-cluster demo                    the narrated kill-a-node demo
  shop-cluster demo --autoscale        a crowd comes and goes; the replicas follow it
  shop-cluster demo --contrast         the same kill with state in sticky replicas' memory,
                                       then in Redis: what the shopper loses, side by side
  shop-cluster up --state memory       (a demonstration) state in the replicas, sticky nginx
  shop-cluster down                    stop everything

hosts (as root: every node on a network namespace of its own, one virtual IP):
  shop-cluster up --hosts              lb-1, lb-2, app-1..3, redis-1 at http://198.18.0.10/
  shop-cluster power-off app-2         pull its cable, then its processes die
  shop-cluster power-on app-2          boot it again: processes afresh, rejoins
  shop-cluster partition app-2 --from redis-1   packets between them vanish
  shop-cluster heal                    every partition removed
  shop-cluster demo --hosts            the narrated machine-loss demo"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every subcommand takes --workdir."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workdir",
        type=Path,
        default=Path(DEFAULT_WORKDIR),
        metavar="DIR",
        help=f"the cluster's work directory: state, configs, logs, data "
        f"(default: {DEFAULT_WORKDIR}/)",
    )
    parser = argparse.ArgumentParser(
        prog="shop-cluster",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # What a new cluster looks like: for `up`, and for `demo` when none runs.
    shape = argparse.ArgumentParser(add_help=False)
    shape.add_argument(
        "--replicas", type=int, default=None, metavar="N",
        help=f"how many shop replicas (default: {DEFAULT_REPLICAS}; with --autoscale, its MIN)",
    )  # fmt: skip
    shape.add_argument(
        "--port", type=int, default=None, metavar="P",
        help=f"the port nginx listens on, on 127.0.0.1 (default: {DEFAULT_PORT}; "
        f"with --hosts, on the virtual IP, default: {hosts.DEFAULT_PORT})",
    )  # fmt: skip
    shape.add_argument(
        "--hosts", action="store_true",
        help="every node on a host of its own: a network namespace with its own address "
        "on a private bridge (198.18.0.0/24, or the next free /24), two load balancers "
        "sharing one virtual IP (keepalived). Needs root",
    )  # fmt: skip
    shape.add_argument(
        "--redis", choices=store.MODES, default="single",
        help="single: one redis-server; ha: a primary, its replicas and 3 Sentinels, "
        "every write acknowledged by a replica (default: single)",
    )  # fmt: skip
    shape.add_argument(
        "--redis-replicas", type=int, default=None, metavar="N",
        help=f"with --redis ha: how many Redis replicas (default: {ha.DEFAULT_REPLICAS}, so "
        "that after the loss of any one node a replica is left to acknowledge writes). "
        "1 means writes stop after a failover until the lost node is back",
    )  # fmt: skip
    shape.add_argument(
        "--no-watchdog", action="store_true",
        help="no watchdog beside nginx: nginx alone, as open-source nginx is, learns of a "
        "hung replica only from requests that time out (to compare; see `freeze`)",
    )  # fmt: skip

    up = sub.add_parser(
        "up", parents=[common, shape], help="start redis, N replicas and nginx; wait until ready"
    )
    up.add_argument(
        "--state", choices=APP_STATES, default=STATE_REDIS,
        help="where replicas keep sessions and carts. redis: the shared store (default). "
        "memory: a demonstration of what this project replaces: each replica's own memory "
        "(one gunicorn worker), nginx hashing each client to one replica by a cookie; a "
        "killed replica takes its shoppers' logins and carts with it",
    )  # fmt: skip
    up.add_argument(
        "--foreground", action="store_true",
        help="stay attached: stream every process's log, stop all on Ctrl-C or SIGTERM",
    )  # fmt: skip
    up.add_argument(
        "--autoscale", type=_policy_range, metavar="MIN:MAX",
        help="start MIN replicas and an autoscaler that keeps them between MIN and MAX "
        "on the requests in flight through nginx (see `autoscale --help`)",
    )  # fmt: skip
    up.add_argument(
        "--autoscale-target", type=_target, default=DEFAULT_TARGET, metavar="C",
        help=f"with --autoscale: requests in flight per replica to aim for "
        f"(default: {DEFAULT_TARGET:g})",
    )  # fmt: skip

    sub.add_parser("down", parents=[common], help="stop every process of the cluster")
    status = sub.add_parser("status", parents=[common], help="show what runs where")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    kill = sub.add_parser(
        "kill", parents=[common], help="crash a process: SIGKILL of its whole process group"
    )
    names = "shop-N, nginx, watchdog, autoscaler, redis; HA: redis-N, sentinel-N"
    kill.add_argument("name", metavar="NAME", help=f"{names} or redis-primary (the primary now)")
    start = sub.add_parser("start", parents=[common], help="start a killed process again")
    start.add_argument("name", metavar="NAME", help=names)
    freeze = sub.add_parser(
        "freeze", parents=[common],
        help="hang a process, as a machine in a swap storm or a deadlock hangs: SIGSTOP of "
        "its whole process group (the kernel still accepts connections; nothing answers)",
        description="Hang a process: SIGSTOP of its whole process group. Unlike `kill`, "
        "nothing is refused or reset: the kernel still accepts connections into the listen "
        "backlog and buffers requests, and nobody answers, the way a machine in a swap storm, "
        "a deadlocked program or a host whose packets vanish behaves. nginx learns of it only "
        "from requests that time out (3 s, then it resends them elsewhere); the watchdog "
        "takes a frozen replica out of rotation within about 1.5 s. `thaw` wakes it.",
    )  # fmt: skip
    freeze.add_argument("name", metavar="NAME", help=f"{names} or redis-primary")
    thaw = sub.add_parser(
        "thaw", parents=[common],
        help="wake a frozen process (SIGCONT): it reads what queued up meanwhile",
    )  # fmt: skip
    thaw.add_argument("name", metavar="NAME", help=f"{names} or redis-primary")
    scale = sub.add_parser(
        "scale", parents=[common],
        help="grow or shrink to N replicas (leaving ones are drained from nginx first)",
    )  # fmt: skip
    scale.add_argument("count", type=int, metavar="N", help="the number of replicas wanted")
    autoscale = sub.add_parser(
        "autoscale", parents=[common],
        help="follow the load: keep the replicas between MIN and MAX, or `off`",
        description=AUTOSCALE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    autoscale.add_argument(
        "range", metavar="MIN:MAX|off", type=_range_or_off,
        help="the range of replicas, e.g. 1:4; `off` stops autoscaling (the replicas stay)",
    )  # fmt: skip
    autoscale.add_argument(
        "--target", type=_target, default=DEFAULT_TARGET, metavar="C",
        help=f"requests in flight per replica to aim for (default: {DEFAULT_TARGET:g}, half "
        f"of a replica's 2 workers x 4 threads)",
    )  # fmt: skip
    hosts_help = "lb-1, lb-2, app-N, redis-N (see `status`)"
    power_off = sub.add_parser(
        "power-off", parents=[common],
        help="hosts: a machine dies: its cable first (packets vanish), then its processes",
    )  # fmt: skip
    power_off.add_argument("host", metavar="HOST", help=hosts_help)
    power_on = sub.add_parser(
        "power-on", parents=[common],
        help="hosts: boot a powered-off host: link up, its processes started afresh",
    )  # fmt: skip
    power_on.add_argument("host", metavar="HOST", help=hosts_help)
    partition = sub.add_parser(
        "partition", parents=[common],
        help="hosts: cut the network between hosts, both ways; all keep running",
    )  # fmt: skip
    partition.add_argument(
        "hosts", metavar="HOST[,HOST...]", type=_names, help="one side of the cut"
    )
    partition.add_argument(
        "--from", dest="others", metavar="HOST[,HOST...]", type=_names, required=True,
        help="the other side",
    )  # fmt: skip
    sub.add_parser("heal", parents=[common], help="hosts: remove every partition")
    demo = sub.add_parser(
        "demo", parents=[common, shape],
        help="narrated demo: kill the replica serving a shopper, lose nothing "
        "(starts a cluster if none runs, and stops only what it started)",
    )  # fmt: skip
    demo.add_argument(
        "--contrast", action="store_true",
        help="the same kill twice, in two clusters side by side (workdirs DIR/contrast-memory "
        "and DIR/contrast-redis, ports P and P+1): sessions and carts in sticky replicas' "
        "memory, then in Redis; prints what the shopper sees and what the background "
        "shoppers lost in each, then stops both",
    )  # fmt: skip
    demo.add_argument(
        "--autoscale", action="store_true",
        help="elasticity instead: a crowd of shoppers comes and goes, the autoscaler (range "
        "1:3) adds replicas and drains them away again, each decision printed with its reason",
    )  # fmt: skip
    return parser


def cmd_up(cluster: Cluster, args: argparse.Namespace) -> int:
    old = cluster.workdir.load()
    if old is not None and not old.any_alive():
        console.print(
            f"[yellow]Found a stale state file in {cluster.workdir} (its processes are gone, "
            f"e.g. after a reboot); starting afresh.[/]"
        )
    follower = None
    if args.foreground:
        follower = LogFollower(cluster.workdir)
        # SIGTERM behaves like Ctrl-C, during start-up too: everything started
        # so far is stopped (up() cleans up after itself, the finally below
        # after a running cluster).
        signal.signal(signal.SIGTERM, _interrupt)
    _explain_redis_replicas(args)
    store = "Redis + Sentinels" if args.redis == "ha" else "redis"
    policy = None
    if args.autoscale is not None:
        policy = _policy(args.autoscale, args.autoscale_target)
    replicas = args.replicas
    if replicas is None:
        replicas = policy.minimum if policy else DEFAULT_REPLICAS
    scaler = " and the autoscaler" if policy else ""
    with console.status(f"Starting {replicas} replicas, {store}, nginx{scaler}…"):
        cluster.up(
            replicas=replicas,
            port=args.port,
            redis=args.redis,
            redis_replicas=args.redis_replicas,
            on_hosts=args.hosts,
            app_state=args.state,
            autoscale=policy,
            with_watchdog=not args.no_watchdog,
        )
    status = cluster.status()
    console.print(status_table(status))
    _say_where_the_hosts_are(cluster)
    console.print(f"The shop is at [bold cyan]{status['url']}[/]  (workdir: {cluster.workdir})")
    if args.state == STATE_MEMORY:
        console.print(
            "[bold yellow]Demonstration:[/] sessions and carts live in each replica's memory "
            "(nginx keeps each client on one replica); killing a replica loses its shoppers' "
            "logins and carts."
        )
    if follower is None:
        console.print("Stop it with: [bold]shop-cluster down" + _workdir_flag(cluster) + "[/]")
        return 0
    console.print("Streaming logs; Ctrl-C stops the cluster.")
    try:
        follower.run()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("\nStopping the cluster…")
        cluster.down()
        console.print("Stopped.")
    return 0


def _say_where_the_hosts_are(cluster: Cluster) -> None:
    """On hosts: which /24 the cluster got, and why when it is not the first."""
    state = cluster.workdir.load()
    if state is None or state.network is None:
        return
    net = state.network
    first = next(netns.SUPERNET.subnets(new_prefix=netns.PREFIX_LENGTH))
    taken = "" if net.subnet == str(first) else f" ({first} and any before it are taken)"
    console.print(
        f"Hosts on {net.subnet}{taken}, on the bridge of namespace {net.switch}; this "
        f"machine is the client, {net.client_address} on {net.client_link}."
    )


def cmd_down(cluster: Cluster, args: argparse.Namespace) -> int:
    old = cluster.workdir.load()
    stale = old is not None and not old.any_alive()
    state = cluster.down()
    if state is None:
        console.print(f"No cluster is running in {cluster.workdir}; nothing to stop.")
    elif stale:
        console.print(f"Removed a stale state file in {cluster.workdir} (nothing was running).")
    else:
        store = "the Redis nodes and Sentinels" if state.ha else "redis"
        guard = ", its watchdog" if state.watchdogs else ""
        scaler = ", the autoscaler" if state.autoscaler else ""
        console.print(
            f"Stopped nginx{guard}{scaler}, {len(state.replicas)} replicas and {store} "
            f"({state.url})."
        )
    return 0


def cmd_status(cluster: Cluster, args: argparse.Namespace) -> int:
    status = cluster.status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        console.print(status_table(status))
    return 0


def cmd_kill(cluster: Cluster, args: argparse.Namespace) -> int:
    proc = cluster.kill(args.name)
    console.print(f"[red]Killed {proc.name}[/] (pid {proc.pid}: SIGKILL to its process group).")
    return 0


def cmd_start(cluster: Cluster, args: argparse.Namespace) -> int:
    proc = cluster.start(args.name)
    console.print(f"[green]Started {proc.name}[/] (pid {proc.pid}, port {proc.port}).")
    return 0


def cmd_freeze(cluster: Cluster, args: argparse.Namespace) -> int:
    proc = cluster.freeze(args.name)
    console.print(
        f"[yellow]Froze {proc.name}[/] (pid {proc.pid}: SIGSTOP to its process group). "
        f"It accepts connections and answers nothing; wake it with: "
        f"[bold]shop-cluster thaw {proc.name}{_workdir_flag(cluster)}[/]"
    )
    return 0


def cmd_thaw(cluster: Cluster, args: argparse.Namespace) -> int:
    proc = cluster.thaw(args.name)
    console.print(f"[green]Thawed {proc.name}[/] (pid {proc.pid}: SIGCONT to its process group).")
    return 0


def cmd_scale(cluster: Cluster, args: argparse.Namespace) -> int:
    with console.status(f"Scaling to {args.count} replicas…"):
        added, removed = cluster.scale(args.count)
    if added:
        console.print("[green]Added[/] " + ", ".join(p.name for p in added) + "; nginx reloaded.")
    if removed:
        names = ", ".join(p.name for p in removed)
        console.print(f"[yellow]Removed[/] {names}: drained from nginx, then stopped gracefully.")
    if not added and not removed:
        console.print(f"Already {args.count} replicas; nothing to do.")
    return 0


def cmd_autoscale(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.range is None:
        was = cluster.workdir.running().autoscale
        cluster.autoscale(None)
        if was is None:
            console.print("Autoscaling was not on; nothing to do.")
        else:
            replicas = len(cluster.workdir.running().replicas)
            console.print(f"Autoscaling [yellow]off[/]; the {replicas} replicas stay as they are.")
        return 0
    policy = _policy(args.range, args.target)
    with console.status("Starting the autoscaler…"):
        state = cluster.autoscale(policy)
    console.print(
        f"Autoscaling [green]on[/]: {policy.describe()} (now {len(state.replicas)}). "
        f"Its decisions: `shop-cluster status{_workdir_flag(cluster)}`, the cluster page "
        f"({state.url}cluster) and {cluster.workdir.log(state.autoscaler)}."
    )
    return 0


def cmd_power_off(cluster: Cluster, args: argparse.Namespace) -> int:
    host, killed = cluster.power_off(args.host)
    console.print(
        f"[red]Powered off {host.name}[/] ({host.address}): its cable pulled, then its "
        f"{len(killed)} processes stopped and killed. Packets to it vanish."
    )
    return 0


def cmd_power_on(cluster: Cluster, args: argparse.Namespace) -> int:
    with console.status(f"Booting {args.host}…"):
        host, started = cluster.power_on(args.host)
    names = ", ".join(p.name for p in started) or "nothing"
    console.print(f"[green]Powered on {host.name}[/] ({host.address}): started {names}.")
    return 0


def cmd_partition(cluster: Cluster, args: argparse.Namespace) -> int:
    pairs = cluster.partition(args.hosts, args.others)
    cut = ", ".join(f"{a} ⟷ {b}" for a, b in pairs)
    console.print(
        f"[yellow]Partitioned[/]: {cut}. Packets between them vanish; every host keeps "
        f"running. `shop-cluster heal{_workdir_flag(cluster)}` restores the network."
    )
    return 0


def cmd_heal(cluster: Cluster, args: argparse.Namespace) -> int:
    healed = cluster.heal()
    if not healed:
        console.print("No partition to heal.")
    else:
        console.print("[green]Healed[/]: " + ", ".join(f"{a} ⟷ {b}" for a, b in healed) + ".")
    return 0


def cmd_demo(cluster: Cluster, args: argparse.Namespace) -> int:
    if args.contrast and args.autoscale:
        raise ClusterError("--contrast and --autoscale are two demos: choose one")
    if args.contrast:
        return _contrast(cluster, args)
    if args.autoscale:
        from .scaledemo import run_autoscale_demo

        return run_autoscale_demo(cluster, console, port=args.port)
    from .demo import run_demo  # the demo pulls in more; only load it when asked

    _explain_redis_replicas(args)
    return run_demo(
        cluster,
        console,
        port=args.port,
        replicas=DEFAULT_REPLICAS if args.replicas is None else args.replicas,
        redis=args.redis,
        redis_replicas=args.redis_replicas,
        with_watchdog=not args.no_watchdog,
        on_hosts=args.hosts,
    )


def _contrast(cluster: Cluster, args: argparse.Namespace) -> int:
    from .contrast import run_contrast

    if args.hosts or args.redis != "single":
        raise ClusterError("--contrast runs two loopback clusters with one Redis each")
    port = DEFAULT_PORT if args.port is None else args.port
    contrast = run_contrast(cluster.workdir, console, port=port, replicas=args.replicas)
    return 0 if contrast.as_expected else 1


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "kill": cmd_kill,
    "start": cmd_start,
    "freeze": cmd_freeze,
    "thaw": cmd_thaw,
    "scale": cmd_scale,
    "autoscale": cmd_autoscale,
    "demo": cmd_demo,
    "power-off": cmd_power_off,
    "power-on": cmd_power_on,
    "partition": cmd_partition,
    "heal": cmd_heal,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `shop-cluster` console script."""
    args = build_parser().parse_args(argv)
    cluster = Cluster(args.workdir)
    try:
        return COMMANDS[args.command](cluster, args)
    except (ClusterError, procs.MissingBinary) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        return 1
    except (TimeoutError, redis.exceptions.RedisError) as exc:
        # A bounded wait ran out, or the store failed, in the middle of a command:
        # one line and where to look, not a traceback.
        err_console.print(
            f"[bold red]error:[/] {exc}\nThe cluster's logs: {cluster.workdir.log_dir}"
        )
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


def _names(text: str) -> list[str]:
    """HOST[,HOST...] as a list of names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected HOST or HOST,HOST,...")
    return names


def _policy_range(text: str) -> str:
    """MIN:MAX, checked as the command line reads it (a clear usage error otherwise)."""
    try:
        Policy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


def _range_or_off(text: str) -> str | None:
    return None if text.strip().lower() == "off" else _policy_range(text)


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(
            f"expected requests in flight per replica, a number above 0 (got {text!r})"
        )
    return value


def _policy(text: str, target: float) -> Policy:
    return Policy.parse(text, target=target)


def _explain_redis_replicas(args: argparse.Namespace) -> None:
    """Say what a single Redis replica gives up, when the user asks for one."""
    if args.redis == "ha" and args.redis_replicas == 1:
        console.print(f"[yellow]note:[/] {ha.ONE_REPLICA_NOTE}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _workdir_flag(cluster: Cluster) -> str:
    default = Workdir(DEFAULT_WORKDIR).path
    return "" if cluster.workdir.path == default else f" --workdir {cluster.workdir}"


if __name__ == "__main__":
    sys.exit(main())

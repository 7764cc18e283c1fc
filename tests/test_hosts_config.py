"""Hosts mode's configuration, without making any host: the keepalived config
from its template, the names and addresses a cluster gets, the nftables
ruleset of a partition. No root needed (but `keepalived --config-test`,
which reads the config as root does)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from shop.cluster import keepalived, netns
from shop.cluster.procs import ClusterError

LAYOUT = [("lb-1", 11), ("lb-2", 12), ("app-1", 101), ("redis-1", 21)]


def network(workdir: str = "/tmp/some/cluster", subnet: str = "198.18.0.0/24") -> netns.Network:
    return netns.plan(Path(workdir), LAYOUT, subnet)


def test_names_come_from_the_workdir_and_fit_an_interface_name() -> None:
    one, same, other = network("/tmp/a"), network("/tmp/a"), network("/tmp/b")
    assert one.id == same.id != other.id
    assert len(one.client_link) <= 15  # IFNAMSIZ - 1
    assert all(ns.startswith(f"{one.id}-") for ns in one.namespaces())
    assert one.host("app-1").netns == f"{one.id}-app-1"


def test_addresses_in_the_clusters_own_24() -> None:
    net = network(subnet="198.18.3.0/24")
    assert net.vip == "198.18.3.10" and net.client_address == "198.18.3.1"
    assert [h.address for h in net.hosts] == [
        "198.18.3.11", "198.18.3.12", "198.18.3.101", "198.18.3.21",
    ]  # fmt: skip
    with pytest.raises(ClusterError, match="no host named 'app-9'"):
        net.host("app-9")


def test_a_second_cluster_takes_the_next_free_24() -> None:
    assert netns.first_free([]) == "198.18.0.0/24"
    assert netns.first_free(["198.18.0.1/24", "192.0.2.0/24"]) == "198.18.1.0/24"
    # A wider route over the range (someone else's) rules out all it covers.
    assert netns.first_free(["198.18.0.0/23", "198.18.2.7/32"]) == "198.18.3.0/24"
    # The Docker engineer's 198.19.0.0/16 is never chosen: the range is 198.18/16.
    everything = [f"198.18.{n}.1/24" for n in range(256)]
    with pytest.raises(ClusterError, match="in use"):
        netns.first_free(everything)


def test_a_partition_drops_both_ways_in_one_transaction() -> None:
    net = network()
    net.partitions = [["app-1", "redis-1"]]
    rules = netns.partition_ruleset(net)
    assert "ip saddr 198.18.0.101 ip daddr 198.18.0.21 drop" in rules
    assert "ip saddr 198.18.0.21 ip daddr 198.18.0.101 drop" in rules
    # Declared, flushed, then filled: applying it twice never doubles a rule.
    assert rules.index("flush table bridge") < rules.index("chain forward")
    assert "hook forward" in rules and "policy accept" in rules


def test_keepalived_config_says_why_and_pairs_the_two_balancers() -> None:
    net = network()
    lbs = [net.host("lb-1"), net.host("lb-2")]
    first, second = (keepalived.render(keepalived.settings(net, lbs, i, 80)) for i in (0, 1))
    assert "priority 150" in first and "priority 100" in second
    assert "unicast_src_ip 198.18.0.11" in first
    assert re.search(r"unicast_peer \{\s+198\.18\.0\.12\s+\}", first)
    assert "198.18.0.10/24 dev eth0" in first
    for directive in ("advert_int 0.2", "nopreempt", "vrrp_version 3", "vrrp_garp_master_delay"):
        assert directive in first
    assert uncommented(first) == []


# Blocks that hold values (addresses, names), not directives.
VALUE_BLOCKS = ("unicast_peer", "virtual_ipaddress", "track_script")
# Directives explained by the comment of the one just above them.
SECOND_OF_A_PAIR = ("enable_script_security", "vrrp_garp_master_repeat", "rise")


def uncommented(config: str) -> list[str]:
    """Directives and blocks with no comment right above them."""
    lines = [line.strip() for line in config.splitlines()]
    missing: list[str] = []
    in_values = False
    for above, line in zip(["", *lines], lines, strict=False):
        if not line or line.startswith("#") or line == "}":
            in_values = in_values and line != "}"
            continue
        paired = line.split()[0] in SECOND_OF_A_PAIR
        if not in_values and not above.startswith("#") and not paired:
            missing.append(line)
        in_values = line.endswith("{") and line.split()[0] in VALUE_BLOCKS
    return missing


@pytest.mark.skipif(
    shutil.which("keepalived", path="/usr/sbin:/sbin:" + os.environ.get("PATH", "")) is None
    or os.geteuid() != 0,
    reason="keepalived --config-test needs keepalived, and root to trust the check script",
)
def test_keepalived_accepts_the_rendered_config(tmp_path: Path) -> None:
    net = network()
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived.render(keepalived.settings(net, net.hosts[:2], 0, 80)))
    binary = shutil.which("keepalived", path="/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    result = subprocess.run(
        [binary, "--config-test", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


# As a user without root: the launcher imported first (as root, the interpreter
# may live where another user cannot read), then the effective user dropped.
AS_NOBODY = """
import os, sys
from shop.cluster.cli import main
import shop.cluster.launcher, shop.cluster.output
# Modules rich imports only when first drawing: load them now, while this
# process may still read the checkout (a clone in a 0700 folder, say).
import io, rich.console
scratch = rich.console.Console(file=io.StringIO(), force_terminal=True)
with scratch.status("loading"):
    scratch.print("[bold red]loading[/]")
if os.geteuid() == 0:
    os.setegid(65534)
    os.seteuid(65534)
sys.exit(main(["up", "--hosts", "--workdir", sys.argv[1]]))
"""


def test_hosts_mode_without_root_says_so_in_one_line_and_makes_nothing() -> None:
    workdir = Path(tempfile.gettempdir()) / f"shop-hosts-{uuid.uuid4().hex}"  # anyone's /tmp
    before = netns.namespaces()
    result = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, str(workdir)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--hosts needs root" in lines[0], result.stderr
    assert "loopback" in lines[0]  # and says what works without it
    assert not workdir.exists()
    assert netns.namespaces() == before


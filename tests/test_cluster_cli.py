"""The launcher's command line when there is nothing (or only debris) to act on:
clear one-line messages, the right exit codes, no tracebacks, nothing started."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import Launcher

from shop.cluster import cli, procs

SUBCOMMANDS = [
    "up", "down", "status", "kill", "start", "freeze", "thaw", "scale", "autoscale", "demo",
]  # fmt: skip


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def test_help_names_every_subcommand_and_each_takes_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: argparse's help is static, and 8 interpreter starts are slow.
    for args in [[], *([name] for name in SUBCOMMANDS)]:
        with pytest.raises(SystemExit) as exit_:
            cli.main([*args, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        if args:
            assert "--workdir" in out
        else:
            assert all(name in out for name in SUBCOMMANDS)
    assert Launcher(tmp_path / "c").run("--help").stdout.startswith("usage: shop-cluster")


def test_down_with_nothing_up_says_so_and_succeeds(tmp_path: Path) -> None:
    result = Launcher(tmp_path / "c").run("down")
    assert "nothing to stop" in result.stdout
    assert not (tmp_path / "c").exists()  # nothing written


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["status", "--json"], ["kill", "shop-1"], ["start", "shop-1"],
        ["freeze", "shop-1"], ["thaw", "shop-1"], ["scale", "2"],
    ],  # fmt: skip
)
def test_commands_without_a_cluster_fail_clearly(tmp_path: Path, args: list[str]) -> None:
    result = Launcher(tmp_path / "c").run(*args, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: no cluster is running in")
    assert result.stdout == ""
    no_traceback(result)


def write_state(workdir: Path, pid: int, start_time: int, boot_id: str) -> Path:
    workdir.mkdir(parents=True)
    proc = {"pid": pid, "start_time": start_time}
    state = {
        "version": 1,
        "port": 1,
        "boot_id": boot_id,
        "redis": {"name": "redis", "port": 2, **proc},
        "nginx": {"name": "nginx", "port": 1, **proc},
        "replicas": [{"name": "shop-1", "port": 3, **proc}],
    }
    path = workdir / "state.json"
    path.write_text(json.dumps(state))
    return path


@pytest.fixture
def dead_pid() -> tuple[int, int]:
    """(pid, start time) of a process that has exited."""
    proc = subprocess.Popen(["sleep", "5"])
    start_time = procs.process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start_time


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen]:
    """A live process that is not ours to signal (its own process group, like a replica)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("case", ["dead pids", "another boot"])
def test_a_stale_state_file_is_reported_then_removed(
    tmp_path: Path, dead_pid: tuple[int, int], stranger: subprocess.Popen, case: str
) -> None:
    if case == "dead pids":
        pid, start_time = dead_pid
        boot = procs.boot_id()
    else:
        # After a reboot a recorded pid (even with a matching start time) may
        # name someone else's process: it must never be signalled.
        pid, start_time = stranger.pid, procs.process_start_time(stranger.pid)
        boot = "an-earlier-boot"
    state_file = write_state(tmp_path / "c", pid, start_time, boot)
    launcher = Launcher(tmp_path / "c")

    status = launcher.run("status", check=False)
    assert status.returncode == 1 and "stale state file" in status.stderr
    no_traceback(status)
    assert launcher.run("kill", "shop-1", check=False).returncode == 1

    down = launcher.run("down")
    assert "stale state file" in down.stdout
    assert not state_file.exists()
    assert stranger.poll() is None


def test_an_unreadable_state_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "state.json").write_text("{not json")
    result = Launcher(tmp_path / "c").run("status", check=False)
    assert result.returncode == 1 and "cannot read" in result.stderr
    no_traceback(result)


def test_a_missing_binary_is_one_line_saying_what_to_install(tmp_path: Path) -> None:
    # nginx is looked for in the sbin folders too (it lives there, off a user's
    # PATH), so the PATH without it hides redis-server, which lives in /usr/bin.
    launcher = Launcher(tmp_path / "c", env={"PATH": str(tmp_path / "empty")})
    result = launcher.run("up", "--port", str(procs.free_port()), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: redis-server is not installed. Install it with: sudo apt-get install redis-server"
    ]
    assert not (tmp_path / "c" / "state.json").exists()


def test_bad_numbers_are_refused(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path / "c")
    result = launcher.run("up", "--replicas", "0", "--port", str(procs.free_port()), check=False)
    assert result.returncode == 1 and "at least 1" in result.stderr
    assert launcher.run("scale", "zero", check=False).returncode == 2  # argparse's usage error


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((procs.LOOPBACK, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = Launcher(tmp_path / "c").run("up", "--port", str(port), check=False)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert not (tmp_path / "c" / "state.json").exists()
    assert not (tmp_path / "c" / "redis").exists()  # checked before starting anything


def test_a_wait_that_runs_out_mid_command_is_one_line_and_where_to_look(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bounded wait inside a command (the demo waiting for a node to sync, say)
    ends in one line naming what it waited for and its last error, and the logs'
    folder: not a traceback. (Seen: `demo --hosts --redis ha` ended in one.)"""

    def never_ready(cluster: object, args: object) -> int:
        def broken() -> bool:
            raise TypeError("node_info() missing 1 required positional argument")

        procs.wait_until(broken, timeout=0.1, what="redis-1 to sync")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "status", never_ready)
    assert cli.main(["status", "--workdir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "timed out after 0s waiting for redis-1 to sync" in err
    assert "last error: TypeError: node_info() missing" in err
    assert str(tmp_path / "c" / "logs") in err.replace("\n", "")
    assert "Traceback" not in err

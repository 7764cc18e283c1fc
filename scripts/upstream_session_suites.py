"""Run Flask's and Flask-Login's own session tests against each session interface.

Downloads the sdists of Flask 3.1.3 and Flask-Login 0.6.3 (their test suites
are not on the wheels) into a work folder outside the repository, builds a
private virtualenv there with pinned versions, starts a redis-server on a free
loopback port, and runs each suite three times through the plugin
``scripts/upstream_swap_session.py``: with Flask's cookie session, with
Flask-Session 0.8 and with sessionstore, each with its defaults. Prints a
table of pass counts and every test that did not pass. Nothing from those
projects is copied into this repository.

    .venv/bin/python scripts/upstream_session_suites.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import venv
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shop.cluster import procs  # noqa: E402  (the repo is on sys.path only now)

FLASK = "flask==3.1.3"
FLASK_LOGIN = "flask-login==0.6.3"
# The suites' own test dependencies; pytest 8 because Flask 3.1.3's conftest
# uses an attribute pytest 9 removed. asgiref runs Flask-Login's one async test.
PACKAGES = [
    FLASK,
    FLASK_LOGIN,
    "flask-session==0.8.0",
    "redis[hiredis]>=5.0",
    "pytest==8.4.2",
    "semantic-version==2.10.0",
    "asgiref>=3.7",
]
INTERFACES = ["cookie", "flask-session", "sessionstore"]
# A whole suite run takes a few seconds; a hang must not stall the script forever.
RUN_TIMEOUT_S = 600


@dataclass
class Suite:
    name: str
    sdist: str  # the requirement pip downloads
    folder_prefix: str  # how its unpacked folder starts
    args: list[str]  # pytest arguments, relative to that folder


SUITES = [
    Suite(
        "Flask's session/flash tests",
        FLASK,
        "flask-",
        [
            "tests/test_basic.py",
            "tests/test_reqctx.py",
            "tests/test_testing.py",
            "-k",
            "session or flash",
        ],
    ),
    Suite("Flask-Login's suite", FLASK_LOGIN, "Flask-Login-", ["tests"]),
]


@dataclass
class Outcome:
    passed: int = 0
    not_passed: dict[str, str] = field(default_factory=dict)  # test id -> failed/error/skipped

    def total(self) -> int:
        return self.passed + len(self.not_passed)

    def cell(self) -> str:
        kinds = list(self.not_passed.values())
        extra = [f"{kinds.count(k)} {k}" for k in ("failed", "error", "skipped") if k in kinds]
        return f"{self.passed} pass" + (f" ({', '.join(extra)})" if extra else "")


def prepare(workdir: Path) -> Path:
    """The private virtualenv's python, created and filled once."""
    python = workdir / "venv" / "bin" / "python"
    stamp = workdir / "venv" / ".packages"
    wanted = "\n".join(PACKAGES)
    if not python.exists():
        venv.create(workdir / "venv", with_pip=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print("installing the suites' dependencies into", workdir / "venv", flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PACKAGES], check=True)
        stamp.write_text(wanted)
    return python


def unpack(python: Path, suite: Suite, workdir: Path) -> Path:
    """The suite's unpacked sdist (downloaded once)."""
    found = sorted(p for p in workdir.glob(f"{suite.folder_prefix}*") if p.is_dir())
    if not found:
        downloads = workdir / "sdists" / suite.folder_prefix.strip("-")
        subprocess.run(
            [python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
            + [suite.sdist, "-d", downloads],
            check=True,
        )
        (archive,) = downloads.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(workdir, filter="data")
        found = sorted(p for p in workdir.glob(f"{suite.folder_prefix}*") if p.is_dir())
    return found[0]


def run(python: Path, folder: Path, suite: Suite, interface: str, redis_url: str, out: Path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "scripts")]),
        "SWAP_SESSION": interface,
        "SWAP_SESSION_REDIS": redis_url,
    }
    subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "upstream_swap_session"]
        + [f"--junitxml={out}", *suite.args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT_S,
        check=False,  # failing tests are what we count, not an error of this script
    )
    return parse(out)


def parse(junit: Path) -> Outcome:
    outcome = Outcome()
    # The XML is the report pytest wrote just now, not untrusted input.
    for case in ET.parse(junit).iter("testcase"):  # noqa: S314
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case]
        if "error" in kinds:
            outcome.not_passed[test_id] = "error"
        elif "failure" in kinds:
            outcome.not_passed[test_id] = "failed"
        elif "skipped" in kinds:
            outcome.not_passed[test_id] = "skipped"
        else:
            outcome.passed += 1
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sessionstore-upstream",
        help="where the virtualenv, the sdists and the reports go (reused by the next run)",
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    python = prepare(workdir)
    folders = {suite.name: unpack(python, suite, workdir) for suite in SUITES}

    port = procs.free_port()
    redis_proc = procs.start_redis(workdir / "redis", port)
    results: dict[tuple[str, str], Outcome] = {}
    try:
        for suite in SUITES:
            for interface in INTERFACES:
                junit = workdir / f"junit-{suite.folder_prefix}{interface}.xml"
                results[suite.name, interface] = run(
                    python,
                    folders[suite.name],
                    suite,
                    interface,
                    f"redis://{procs.LOOPBACK}:{port}/0",
                    junit,
                )
    finally:
        procs.stop_process(redis_proc.pid)

    print("\n| suite | " + " | ".join(INTERFACES) + " |")
    print("|---|" + "---|" * len(INTERFACES))
    for suite in SUITES:
        total = results[suite.name, INTERFACES[0]].total()
        cells = [results[suite.name, i].cell() for i in INTERFACES]
        print(f"| {suite.name} ({total}) | " + " | ".join(cells) + " |")
    for suite in SUITES:
        for interface in INTERFACES:
            for test_id, kind in sorted(results[suite.name, interface].not_passed.items()):
                print(f"{suite.name} / {interface}: {kind}: {test_id}")


if __name__ == "__main__":
    main()

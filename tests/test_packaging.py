"""What a user gets: the wheel carries every non-Python file the code loads,
and the README's quick start is exactly the two commands CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parent.parent
# Files the packages read at run time (Lua scripts, templates, static files,
# the catalog, the nginx template): the Dockerfile's `pip install .` must ship them.
DATA = ["sessionstore/lua/*.lua", "shop/lua/*.lua", "shop/templates/*.html",
        "shop/static/*", "shop/data/*.json", "shop/cluster/*.j2"]  # fmt: skip


def test_the_wheel_carries_every_file_the_code_loads(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {str(path.relative_to(ROOT)) for pattern in DATA for path in ROOT.glob(pattern)}
    assert len(wanted) > 20
    assert wanted - shipped == set()


def test_the_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", quick_start, re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./run.sh up", "./run.sh test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./run.sh test" in ci


def test_run_sh_explains_itself() -> None:
    result = subprocess.run(
        [str(ROOT / "run.sh"), "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "./run.sh up" in result.stdout and "./run.sh test" in result.stdout

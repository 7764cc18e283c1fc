"""Step screenshots: `NN-step.png` for each step of one test, for a person to look at."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


def slug(text: str) -> str:
    """`text` as a safe file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "step"


@dataclass
class Shots:
    """Saves `NN-step.png` for each step of one test under its output folder."""

    folder: Path
    count: int = 0
    saved: list[Path] = field(default_factory=list)

    def __call__(self, page, step: str, *, full_page: bool = True) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{slug(step)}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.saved.append(path)
        print(f"screenshot: {path}")
        return path

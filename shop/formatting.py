"""How the shop writes numbers for people: money and durations.

Imports nothing of Flask, so the HTML pages, the cluster page and the
launcher's narrated demo all write them alike (static/cluster.js writes
durations the same way when it redraws the cluster page).
"""

from __future__ import annotations


def money(cents: int) -> str:
    """Integer cents as euros, e.g. 1250 -> '€12.50'."""
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    return f"{sign}€{cents // 100:,}.{cents % 100:02d}"


def duration(seconds: float) -> str:
    """Seconds in words, to the unit that matters: '42 s', '5 min 3 s', '2 h 7 min'."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min {total % 60} s"
    return f"{minutes // 60} h {minutes % 60} min"

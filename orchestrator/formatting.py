"""How the CLI and the model cards write numbers: scores x100 and byte counts, defined once."""
from __future__ import annotations


def pct(value: float | None) -> str:
    """A 0-1 score as x100 with one decimal ("77.6"); "-" when there is none."""
    return "-" if value is None else f"{100 * value:.1f}"


def human_bytes(n: float) -> str:
    """A byte count in SI units: "512 B", "1.5 kB", "3.2 GB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"

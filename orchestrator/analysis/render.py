"""Print a `Table` as text, markdown, csv or latex: scores times 100 at one decimal, NaN as "n/a"."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import pandas as pd

from orchestrator.analysis.tables import Table

FORMATS = ("text", "markdown", "csv", "latex")
EXTENSIONS = {"text": "txt", "markdown": "md", "csv": "csv", "latex": "tex"}
MISSING = "n/a"


def percent(value: float) -> str:
    """A 0-1 score as the tables print it: times 100, one decimal."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value) * 100:.1f}"


def _index_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _flat(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and rows: index levels first, then one column per (label, stat)."""
    frame = table.frame
    header = [name or "" for name in frame.index.names]
    header += [" ".join(str(p) for p in col) if isinstance(col, tuple) else str(col) for col in frame.columns]
    rows = []
    for index, values in zip(frame.index, frame.itertuples(index=False)):
        index = index if isinstance(index, tuple) else (index,)
        rows.append([_index_value(i) for i in index] + [percent(v) for v in values])
    return header, rows


def render(table: Table, fmt: str, notes: bool = True) -> str:
    """The table in one of FORMATS; its info lines (draw records used, short soups) and its notes on
    missing results follow it (never in csv); notes=False leaves out the notes, not the info."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not notes:
        table = replace(table, notes=())
    return {"text": _text, "markdown": _markdown, "csv": _csv, "latex": _latex}[fmt](table)


def _notes(table: Table, prefix: str) -> str:
    lines = [f"{prefix}note: {line}" for line in table.info] + [f"{prefix}incomplete: {note}" for note in table.notes]
    if not lines:
        return ""
    return "\n" + "\n".join(lines) + "\n"


def _text(table: Table) -> str:
    shown = table.frame.map(percent)
    shown.index = shown.index.map(lambda i: tuple(map(_index_value, i)) if isinstance(i, tuple) else _index_value(i))
    return f"{table.title}\n{shown.to_string()}\n{_notes(table, '')}"


def _markdown(table: Table) -> str:
    header, rows = _flat(table)
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |"]
    lines.append(
        "| " + " | ".join("---" if i < table.frame.index.nlevels else "---:" for i in range(len(header))) + " |"
    )
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n" + _notes(table, "- ")


def _csv(table: Table) -> str:
    header, rows = _flat(table)
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=header).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def _latex(table: Table) -> str:
    frame = table.frame
    levels = frame.index.nlevels
    labels = list(dict.fromkeys(col[0] for col in frame.columns))
    stats = [col[1] for col in frame.columns if col[0] == labels[0]]
    _, rows = _flat(table)
    spec = "l" * levels + "".join("r" * len(stats) for _ in labels)
    lines = [
        f"% {_latex_escape(table.title)}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & " * levels
        + " & ".join(rf"\multicolumn{{{len(stats)}}}{{c}}{{{_latex_escape(name)}}}" for name in labels)
        + r" \\",
        " & ".join(_latex_escape(n or "") for n in frame.index.names)
        + " & "
        + " & ".join(stats * len(labels))
        + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_latex_escape(cell) for cell in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n" + _notes(table, "% ")

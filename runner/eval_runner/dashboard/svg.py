"""The dashboard's plots, drawn on the server as SVG: no JavaScript charting library and no CDN
(clusters are often offline), and a page that reads the same with scripts off.

Pure functions of the API's models. Every data point is one element of class "mark" carrying
its numbers in data- attributes, so the page can be checked (and read by assistive tools)
without parsing geometry; every text goes through markupsafe's escaping.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from eval_runner.dashboard import models

ROW_HEIGHT = 26
LABEL_WIDTH = 150
PLOT_WIDTH = 420
MARGIN = 12
AXIS_HEIGHT = 24
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _x(value: float) -> float:
    return round(LABEL_WIDTH + max(0.0, min(1.0, value)) * PLOT_WIDTH, 2)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _axis(top: float, bottom: float) -> list[str]:
    parts = []
    for tick in TICKS:
        x = _x(tick)
        parts.append(
            f'<line class="grid" x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" />'
            f'<text class="tick" x="{x}" y="{bottom + 16}" text-anchor="middle">{tick:g}</text>'
        )
    return parts


def leaderboard_chart(task: models.LeaderboardTask) -> Markup:
    """One row per model, best first: the score as a dot, its 95% interval as a whisker."""
    rows = task.entries
    height = MARGIN + len(rows) * ROW_HEIGHT + AXIS_HEIGHT
    width = LABEL_WIDTH + PLOT_WIDTH + MARGIN * 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart leaderboard" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(task.task)}: score and 95% interval per model">',
        f"<title>{escape(task.task)}: score per model with 95% intervals</title>",
        *_axis(MARGIN / 2, MARGIN + len(rows) * ROW_HEIGHT),
    ]
    for i, entry in enumerate(rows):
        y = MARGIN + i * ROW_HEIGHT + ROW_HEIGHT / 2
        label = escape(entry.model)
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH - 8}" y="{y + 4}" '
            f'text-anchor="end">{label}</text>'
        )
        if entry.ci95:
            lo, hi = entry.ci95
            parts.append(
                f'<line class="whisker" x1="{_x(lo)}" y1="{y}" x2="{_x(hi)}" y2="{y}" />'
                f'<line class="whisker" x1="{_x(lo)}" y1="{y - 5}" x2="{_x(lo)}" y2="{y + 5}" />'
                f'<line class="whisker" x1="{_x(hi)}" y1="{y - 5}" x2="{_x(hi)}" y2="{y + 5}" />'
            )
        if entry.score is not None:
            interval = f"[{_fmt(entry.ci95[0])}, {_fmt(entry.ci95[1])}]" if entry.ci95 else ""
            best = " best" if entry.rank == 1 else ""
            parts.append(
                f'<circle class="mark{best}" cx="{_x(entry.score)}" cy="{y}" r="5" '
                f'data-model="{label}" data-score="{entry.score}">'
                f"<title>{label}: {_fmt(entry.score)} {interval} n={entry.n}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def history_chart(cell: models.CellHistory, *, width: int = 260, height: int = 80) -> Markup:
    """A cell's score over its succeeded runs: a line through the runs, their intervals as a
    band, one mark per run."""
    points = [p for p in cell.points if p.score is not None]
    pad = 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart history" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(cell.cell)}: score over {len(points)} runs">',
        f"<title>{escape(cell.cell)}: score over time</title>",
        f'<rect class="frame" x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" />',
    ]

    def xy(index: int, value: float) -> tuple[float, float]:
        span = max(len(points) - 1, 1)
        x = pad + (width - 2 * pad) * (index / span if len(points) > 1 else 0.5)
        y = pad + (height - 2 * pad) * (1 - max(0.0, min(1.0, value)))
        return round(x, 2), round(y, 2)

    if points:
        upper = [xy(i, p.ci95[1] if p.ci95 else p.score or 0) for i, p in enumerate(points)]
        lower = [xy(i, p.ci95[0] if p.ci95 else p.score or 0) for i, p in enumerate(points)]
        band = " ".join(f"{x},{y}" for x, y in upper + lower[::-1])
        parts.append(f'<polygon class="band" points="{band}" />')
        line = " ".join(f"{x},{y}" for x, y in (xy(i, p.score or 0) for i, p in enumerate(points)))
        parts.append(f'<polyline class="line" points="{line}" />')
        for i, p in enumerate(points):
            x, y = xy(i, p.score or 0)
            run = escape(p.suite_run or p.run)
            parts.append(
                f'<circle class="mark" cx="{x}" cy="{y}" r="3" data-run="{run}" '
                f'data-score="{p.score}"><title>{run}: {_fmt(p.score)} (n={p.n})</title></circle>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def changes_chart(changes: models.Changes, *, size: int = 180) -> Markup:
    """The 2 x 2 of a comparison (baseline right/wrong x candidate right/wrong), each square's
    shade by its share of the pairs."""
    cells: Sequence[tuple[str, str, int, int, int]] = (
        ("both right", "same", changes.both_right, 0, 0),
        ("broken", "worse", changes.broken, 1, 0),
        ("fixed", "better", changes.fixed, 0, 1),
        ("both wrong", "same", changes.both_wrong, 1, 1),
    )
    total = max(sum(c[2] for c in cells), 1)
    half = size / 2
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart changes" '
        f'viewBox="0 0 {size + 90} {size + 40}" width="{size + 90}" height="{size + 40}" '
        f'role="img" aria-label="outcome changes between the runs">',
        f'<text class="tick" x="{70 + half / 2}" y="12" text-anchor="middle">'
        "candidate right</text>",
        f'<text class="tick" x="{70 + half * 1.5}" y="12" text-anchor="middle">'
        "candidate wrong</text>",
        f'<text class="tick" x="0" y="{20 + half / 2}">base right</text>',
        f'<text class="tick" x="0" y="{20 + half * 1.5}">base wrong</text>',
    ]
    for label, kind, count, col, row in cells:
        x, y = 70 + col * half, 20 + row * half
        share = count / total
        parts.append(
            f'<rect class="mark {kind}" x="{x}" y="{y}" width="{half - 2}" height="{half - 2}" '
            f'fill-opacity="{0.15 + 0.85 * share:.3f}" data-kind="{label}" data-count="{count}">'
            f"<title>{label}: {count}</title></rect>"
            f'<text class="count" x="{x + half / 2}" y="{y + half / 2 + 5}" '
            f'text-anchor="middle">{count}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))

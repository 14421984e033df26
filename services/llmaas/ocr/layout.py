"""Markdown from the lines an OCR model recognised: lines in reading order (rows top to bottom, the segments of a row
left to right), a paragraph break where the vertical gap is wider than a line, and a heading for a row much taller
than the page's usual text."""

from __future__ import annotations

import statistics

# A row this much taller than the median line is a heading; a gap wider than this many lines breaks a paragraph.
HEADING_RATIO = 1.6
PARAGRAPH_GAP = 1.0


def _extent(box) -> tuple[float, float, float, float]:
    xs = [p[0] for p in box]
    ys = [p[1] for p in box]
    return min(xs), min(ys), max(xs), max(ys)


def to_markdown(lines: list[dict]) -> str:
    """`lines`: {"text", "box": four [x, y] corners}, in any order."""
    boxes = [(_extent(line["box"]), line["text"]) for line in lines if line["text"].strip()]
    if not boxes:
        return ""
    height = statistics.median(y1 - y0 for (_, y0, _, y1), _ in boxes) or 1.0
    boxes.sort(key=lambda b: ((b[0][1] + b[0][3]) / 2, b[0][0]))
    rows: list[dict] = []
    for (x0, y0, _, y1), text in boxes:
        centre = (y0 + y1) / 2
        if rows and abs(centre - rows[-1]["centre"]) < 0.5 * height:
            row = rows[-1]
            row["segments"].append((x0, text))
            row["top"], row["bottom"] = min(row["top"], y0), max(row["bottom"], y1)
            row["tallest"] = max(row["tallest"], y1 - y0)
        else:
            rows.append({"centre": centre, "top": y0, "bottom": y1, "tallest": y1 - y0, "segments": [(x0, text)]})
    out: list[str] = []
    previous_bottom = None
    for row in rows:
        text = "  ".join(t.strip() for _, t in sorted(row["segments"]))
        if previous_bottom is not None and row["top"] - previous_bottom > PARAGRAPH_GAP * height:
            out.append("")
        out.append(f"# {text}" if len(rows) > 1 and row["tallest"] > HEADING_RATIO * height else text)
        previous_bottom = row["bottom"]
    return "\n".join(out)

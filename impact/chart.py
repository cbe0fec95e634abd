"""The trajectory chart of an evaluation as SVG: concern events a month, before and after the index
month, for the children who received the intervention and the weighted comparison group. Plain SVG
text: two polylines, axes and labels, no plotting library needed for that much."""
from __future__ import annotations

import base64
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT, MARGIN = 640, 360, 56
COLOURS = {"treated": "#c0392b", "comparison": "#2c7fb8"}


def trajectory_svg(title: str, offsets: list[int], treated: list[float | None],
                   comparison: list[float | None]) -> str:
    values = [v for v in treated + comparison if v is not None]
    top = max(values + [0.1]) * 1.1
    x0, x1 = MARGIN, WIDTH - MARGIN // 2
    y0, y1 = HEIGHT - MARGIN, MARGIN // 2 + 16
    lo, hi = offsets[0], offsets[-1]

    def x(k: float) -> float:
        return x0 + (k - lo) / max(hi - lo, 1) * (x1 - x0)

    def y(v: float) -> float:
        return y0 - v / top * (y0 - y1)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f"<title>{escape(title)}</title>",
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
             f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
             f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
             f'<line x1="{x(0):.1f}" y1="{y0}" x2="{x(0):.1f}" y2="{y1}" stroke="grey" stroke-dasharray="4 3"/>',
             f'<text x="{x(0) + 4:.1f}" y="{y1 + 10}" fill="grey">start</text>']
    for k in offsets:
        if k % 3 == 0:
            parts.append(f'<text x="{x(k):.1f}" y="{y0 + 16}" text-anchor="middle">{k}</text>')
    for i in range(5):
        v = top * i / 4
        parts.append(f'<text x="{x0 - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{HEIGHT - 14}" text-anchor="middle">'
                 "months from the start of the intervention</text>")
    parts.append(f'<text transform="translate(14 {(y0 + y1) / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 "concern events a month</text>")
    for n, (name, series) in enumerate((("treated", treated), ("comparison", comparison))):
        points = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in zip(offsets, series) if v is not None)
        if points:
            parts.append(f'<polyline fill="none" stroke="{COLOURS[name]}" stroke-width="2" points="{points}"/>')
        label = "received it" if name == "treated" else "comparison (weighted)"
        parts.append(f'<rect x="{x1 - 170}" y="{y1 + 14 * n}" width="10" height="10" fill="{COLOURS[name]}"/>')
        parts.append(f'<text x="{x1 - 155}" y="{y1 + 9 + 14 * n}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def trajectory_attachment(intervention: str, offsets: list[int], treated: list[float | None],
                          comparison: list[float | None]) -> dict[str, Any]:
    """The chart as a FHIR Attachment (``image/svg+xml``, base64 data), titled by the intervention."""
    title = f"{intervention}: concern events a month around the start"
    svg = trajectory_svg(title, offsets, treated, comparison)
    return {"contentType": "image/svg+xml", "title": title,
            "data": base64.b64encode(svg.encode("utf-8")).decode("ascii")}

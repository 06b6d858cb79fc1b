"""Hand-written SVG bar plots for bench/compare/compare.py (stdlib only, no matplotlib).

grouped_bars_svg() draws one or more panels of grouped bars: one group per category
(scenario), one bar per series (tool), with value labels, a y axis (linear or log) and a legend.
"""

import math
from xml.sax.saxutils import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _nice_step(span, target_ticks=5):
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _fmt(v):
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _panel(x0, y0, w, h, title, unit, categories, series, values, log):
    """One panel at (x0, y0) of size w x h. values[s][c] is a number or None."""
    out = []
    left, right, top, bottom = 64, 12, 28, 58
    pw, ph = w - left - right, h - top - bottom
    px, py = x0 + left, y0 + top
    nums = [v for s in series for v in (values.get(s, {}).get(c) for c in categories)
            if v is not None and v > 0]
    out.append(f'<text x="{x0 + w / 2:.1f}" y="{y0 + 18}" text-anchor="middle" '
               f'font-size="14" font-weight="bold">{escape(title)}</text>')
    out.append(f'<rect x="{px}" y="{py}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if not nums:
        out.append(f'<text x="{px + pw / 2:.1f}" y="{py + ph / 2:.1f}" text-anchor="middle" '
                   f'fill="#666">no data</text>')
        return out
    if log:
        lo = 10 ** math.floor(math.log10(min(nums)))
        hi = 10 ** math.ceil(math.log10(max(nums) * 1.05))
        if hi <= lo:
            hi = lo * 10

        def ypos(v):
            v = max(v, lo)
            return py + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        ticks = []
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        lo = 0.0
        step = _nice_step(max(nums) * 1.1)
        hi = step * math.ceil(max(nums) * 1.1 / step)

        def ypos(v):
            return py + ph - (v - lo) / (hi - lo) * ph
        ticks = [i * step for i in range(int(round(hi / step)) + 1)]
    for t in ticks:
        y = ypos(t)
        out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{px - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{escape(_fmt(t))}</text>')
    out.append(f'<text x="{x0 + 14}" y="{py + ph / 2:.1f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 + 14} {py + ph / 2:.1f})">'
               f'{escape(unit + (" (log scale)" if log else ""))}</text>')
    ngroups, nser = len(categories), len(series)
    gw = pw / max(ngroups, 1)
    bw = gw * 0.8 / max(nser, 1)
    for gi, c in enumerate(categories):
        gx = px + gi * gw + gw * 0.1
        for si, s in enumerate(series):
            v = values.get(s, {}).get(c)
            bx = gx + si * bw
            if v is None:
                out.append(f'<text x="{bx + bw / 2:.1f}" y="{py + ph - 4:.1f}" '
                           f'text-anchor="middle" font-size="9" fill="#999">err</text>')
                continue
            y = ypos(v) if v > 0 else py + ph
            out.append(f'<rect x="{bx:.1f}" y="{y:.1f}" width="{bw * 0.92:.1f}" '
                       f'height="{py + ph - y:.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                       f'<title>{escape(f"{c} {s}: {_fmt(v)} {unit}")}</title></rect>')
            out.append(f'<text x="{bx + bw * 0.46:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                       f'font-size="9">{escape(_fmt(v))}</text>')
        lx, ly = px + gi * gw + gw / 2, py + ph + 14
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="end" font-size="11" '
                   f'transform="rotate(-30 {lx:.1f} {ly:.1f})">{escape(c)}</text>')
    return out


def grouped_bars_svg(path, title, categories, series, panels, subtitle=None,
                     panel_width=None, panel_height=320):
    """Write an SVG file with one row of panels.

    panels: list of dicts {"title", "unit", "values": {series: {category: number|None}},
    "log": bool}.
    """
    pw = panel_width or max(360, 70 * len(categories) + 90)
    width = pw * len(panels) + 20
    legend_h = 26
    head = 46 if subtitle else 30
    height = head + panel_height + legend_h + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="16" '
           f'font-weight="bold">{escape(title)}</text>']
    if subtitle:
        out.append(f'<text x="{width / 2:.1f}" y="38" text-anchor="middle" font-size="11" '
                   f'fill="#444">{escape(subtitle)}</text>')
    for i, p in enumerate(panels):
        out += _panel(10 + i * pw, head, pw, panel_height, p["title"], p["unit"], categories,
                      series, p["values"], p.get("log", False))
    ly = head + panel_height + 14
    x = width / 2 - 80 * len(series) / 2
    for si, s in enumerate(series):
        out.append(f'<rect x="{x:.1f}" y="{ly - 10}" width="14" height="12" '
                   f'fill="{PALETTE[si % len(PALETTE)]}"/>')
        out.append(f'<text x="{x + 20:.1f}" y="{ly}" font-size="12">{escape(s)}</text>')
        x += 80
    out.append("</svg>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")

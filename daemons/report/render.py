"""A report as a list of blocks, written out as Markdown or as a self-contained HTML page.

Blocks are plain tuples so that the content (``sections``) knows nothing of either format:
``("h", level, text)``, ``("p", text)``, ``("table", headers, rows)``, ``("img", file, alt)``.
Text may hold `code` spans.
"""
from __future__ import annotations

import base64
import html
import re

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1050px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; }
th { background: #f2f2f2; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
p.small { color: #666; font-size: 13px; }
""".strip()

_NUMERIC = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?( ?%)?$|^n/a$")


def markdown(blocks: list[tuple]) -> str:
    """The blocks as GitHub-flavoured Markdown."""
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"{'#' * b[1]} {b[2]}\n")
        elif kind == "p":
            out.append(f"{b[1]}\n")
        elif kind == "table":
            headers, rows = b[1], b[2]
            out.append("| " + " | ".join(headers) + " |")
            out.append("|" + "|".join("---:" if _numeric_col(rows, i) else "---"
                                      for i in range(len(headers))) + "|")
            for row in rows:
                out.append("| " + " | ".join(str(c) for c in row) + " |")
            out.append("")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
    return "\n".join(out).rstrip("\n") + "\n"


def page(blocks: list[tuple], images: dict[str, bytes], title: str) -> str:
    """The blocks as one HTML page, charts embedded (base64) so it travels as a single file."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>\n{CSS}\n</style>", "</head>",
           "<body>"]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "table":
            headers, rows = b[1], b[2]
            numeric = [_numeric_col(rows, i) for i in range(len(headers))]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr>")
            for row in rows:
                cells = "".join(f'<td class="n">{_inline(str(c))}</td>' if numeric[i]
                                else f"<td>{_inline(str(c))}</td>" for i, c in enumerate(row))
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
        elif kind == "img":
            name, alt = b[1], b[2]
            data = images.get(name)
            if data is None:
                continue
            src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            out.append(f'<p><img src="{src}" alt="{html.escape(alt)}"></p>')
            out.append(f'<p class="small">File: <a href="{html.escape(name)}">'
                       f"{html.escape(name)}</a></p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    parts = str(text).split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p)
                   for i, p in enumerate(parts))


def _numeric_col(rows: list, i: int) -> bool:
    cells = [str(r[i]) for r in rows if i < len(r)]
    return bool(cells) and all(_NUMERIC.match(c) for c in cells) \
        and any(c != "n/a" for c in cells)

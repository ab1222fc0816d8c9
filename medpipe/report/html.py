"""One self-contained HTML page: text, tables and PNG images embedded as base64 data URIs.

No template engine and no external assets, so the file opens anywhere (mail, an offline
laptop, a Kaggle notebook's output) exactly as it was written.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.io.atomic import atomic_write_text

__all__ = ["Page", "Section", "figure_png", "png_data_uri"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; margin-top: 2em; }
h3 { margin-top: 1.4em; }
nav ul { columns: 2; } .lede { color: #555; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } .num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
"""


def figure_png(fig, dpi: int = 90) -> bytes:
    """Render a Matplotlib figure to PNG bytes (no pyplot state, so it works under any backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_data_uri: the bytes are not a PNG image")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class Section:
    """One ``<h2>`` part of the page; blocks are HTML fragments added in reading order."""

    title: str
    blocks: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return _slug(self.title)

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h3>{html.escape(text)}</h3>")

    def text(self, text: str) -> None:
        self.blocks.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        """A visible "not available" box: what is missing and why, instead of a crash."""
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')

    def table(self, frame: pd.DataFrame, float_format: str = "{:.4f}", max_rows: int = 200) -> None:
        """A table with numbers right-aligned and text left-aligned, everything escaped."""
        shown = frame.head(max_rows)
        numeric = [
            pd.api.types.is_numeric_dtype(shown[c]) and shown[c].dtype != bool for c in shown
        ]

        def cell(value, is_number: bool) -> str:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                text = ""
            elif isinstance(value, float | np.floating):
                text = float_format.format(value)
            else:
                text = str(value)
            return f"<td{' class=num' if is_number else ''}>{html.escape(text)}</td>"

        head = "".join(
            f"<th{' class=num' if n else ''}>{html.escape(str(c))}</th>"
            for c, n in zip(shown.columns, numeric, strict=True)
        )
        body = "".join(
            "<tr>" + "".join(cell(v, n) for v, n in zip(row, numeric, strict=True)) + "</tr>"
            for row in shown.itertuples(index=False)
        )
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if len(frame) > max_rows:
            self.note(f"{len(frame) - max_rows} more rows not shown (first {max_rows} above).")

    def image(self, png: bytes, caption: str = "", alt: str = "") -> None:
        alt_text = html.escape(alt or caption or self.title, quote=True)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(
            f'<figure><img src="{png_data_uri(png)}" alt="{alt_text}">{cap}</figure>'
        )


@dataclass
class Page:
    """The report: a title, a one-paragraph summary, a table of contents and the sections."""

    title: str
    summary: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        section = Section(title)
        self.sections.append(section)
        return section

    def render(self) -> str:
        toc = "".join(
            f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in self.sections
        )
        body = "".join(
            f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
            for s in self.sections
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><p class=lede>{html.escape(self.summary)}</p>"
            f"<nav><ul>{toc}</ul></nav>{body}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:

        atomic_write_text(self.render(), path)
        return Path(path)

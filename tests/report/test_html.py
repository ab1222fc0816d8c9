"""The page writer: embedded PNGs, escaping, tables, notes."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from medpipe.report.html import Page, figure_png, png_data_uri


def _png() -> bytes:
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    return figure_png(fig)


def test_images_are_embedded_as_base64_png_and_nothing_is_linked(tmp_path):
    page = Page("t")
    page.section("A").image(_png(), "a plot")
    html = page.write(tmp_path / "r.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 1
    assert base64.b64decode(uris[0]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # no external file or URL


def test_non_png_bytes_are_refused():
    with pytest.raises(ValueError, match="PNG"):
        png_data_uri(b"GIF89a")


def test_text_and_table_cells_are_escaped():
    page = Page("<title>")
    section = page.section("S & T")
    section.text("<script>alert(1)</script>")
    section.table(pd.DataFrame({"name": ["<b>x</b>"], "score": [0.5]}))
    html = page.render()
    assert "<script>alert" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'href="#s-t"' in html and 'id="s-t"' in html


def test_table_formats_floats_aligns_numbers_and_truncates():
    section = Page("t").section("s")
    frame = pd.DataFrame({"model": ["a", "b", "c"], "score": [0.123456, np.nan, 1.0]})
    section.table(frame, max_rows=2)
    table, note = section.blocks
    assert "<td class=num>0.1235</td>" in table
    assert "<td>a</td>" in table and "<td>c</td>" not in table
    assert "<td class=num></td>" in table  # NaN shows as an empty cell
    assert "1 more rows" in note


def test_note_is_visible_box():
    section = Page("t").section("s")
    section.note("fusion is disabled")
    assert section.blocks == ['<p class="note">fusion is disabled</p>']

"""The report renders in a real browser: every embedded image decodes (headless Chromium)."""

from __future__ import annotations

from medpipe.report import build_report
from medpipe.report.html import Page
from tests.report.browser import decoded_images
from tests.report.test_html import _png
from tests.sources import as_view


def test_every_image_of_a_built_report_decodes_in_chromium(fake_run, tmp_path):
    config, run_dir = fake_run
    out = build_report(as_view(config), run_dir, tmp_path / "report.html", progress=False)
    decoded, total, title = decoded_images(out, tmp_path)
    assert total >= 8
    assert decoded == total
    assert "medpipe report" in title


def test_the_probe_notices_a_broken_image(tmp_path):
    page = Page("broken")
    section = page.section("s")
    section.image(_png())
    section.blocks.append('<img src="data:image/png;base64,iVBORw0KGgoAAAAA" alt="corrupt">')
    decoded, total, _ = decoded_images(page.write(tmp_path / "p.html"), tmp_path)
    assert (decoded, total) == (1, 2)

"""Load an HTML file in headless Chromium and report how many of its images decoded.

The page is copied with a small script appended that, once everything has loaded, writes the
count of ``<img>`` elements with ``naturalWidth > 0`` into an attribute; ``--dump-dom`` prints
the DOM after the scripts ran, and the attribute is read back from it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const ok = images.filter((i) => i.complete && i.naturalWidth > 0);
  document.documentElement.setAttribute("data-images-total", String(images.length));
  document.documentElement.setAttribute("data-images-decoded", String(ok.length));
  document.documentElement.setAttribute("data-probe", "done");
});
</script>"""


def chromium() -> str:
    """The Chromium executable, or skip the test with what to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless browser check needs Chromium: apt-get install -y chromium (CI installs it)"
    )


def decoded_images(html_file: Path, workdir: Path) -> tuple[int, int, str]:
    """``(decoded, total, title)`` of the page's images after Chromium rendered it."""
    probe = workdir / "probe.html"
    text = Path(html_file).read_text()
    probe.write_text(text.replace("</body>", _PROBE + "</body>", 1))
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    if 'data-probe="done"' not in dom:
        raise AssertionError(
            f"chromium did not finish loading {html_file} (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    decoded = int(re.search(r'data-images-decoded="(\d+)"', dom).group(1))
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    return decoded, total, title.group(1) if title else ""

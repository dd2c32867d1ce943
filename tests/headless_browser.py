"""A page as a person's browser shows it: headless Chromium's screenshot and loaded images.

Chromium is a Debian package (`apt-get install chromium`; .ci/run installs it). Where it is
missing, the tests that need it skip and say so; under CI=true the suite refuses to start instead
(tests/conftest.py), so that a CI run never passes without the browser checks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Debian's chromium, headless as root, nothing fetched in the background.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

# Injected into a copy of the page: once everything has loaded, write each image's state where
# --dump-dom shows it.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const probe = document.createElement("pre");
  probe.id = "image-probe";
  probe.textContent = JSON.stringify(Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight]));
  document.body.appendChild(probe);
});
</script>"""


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "install Debian's chromium (apt-get install chromium) for the browser check"


def find_chromium() -> str | None:
    return next((found for found in map(shutil.which, BROWSERS) if found), None)


def chromium() -> str:
    return find_chromium() or pytest.skip(f"no headless browser: {INSTALL}")


def run_chromium(work_dir: Path, *args: str) -> subprocess.CompletedProcess:
    profile = work_dir / "chromium-profile"  # a fresh profile each time: no state from an earlier check
    shutil.rmtree(profile, ignore_errors=True)
    result = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result


def loaded_images(page: Path, work_dir: Path) -> list[tuple[bool, int, int]]:
    """(complete, naturalWidth, naturalHeight) of every <img> of the page, after Chromium loaded it."""
    probe = work_dir / f"probe-{page.name}"
    probe.write_text(page.read_text().replace("</body>", IMAGE_PROBE + "</body>"))
    dom = run_chromium(work_dir, "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe script did not run:\n{dom[-2000:]}"
    return [tuple(entry) for entry in json.loads(found.group(1))]


def screenshot(page: Path, work_dir: Path, size: tuple[int, int] = (1280, 2000)) -> Path:
    shot = work_dir / f"{page.stem}.png"
    run_chromium(work_dir, f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}", page.as_uri())
    return shot


def assert_non_trivial_png(path: Path, size: tuple[int, int]) -> None:
    """A real picture of a page: the expected size, and more than a few shades (not a blank or an error square)."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        assert image.size == size
        shades = image.convert("L").getcolors(maxcolors=256)
        assert shades is not None and len(shades) > 20, f"{path} is nearly blank: {len(shades or [])} shades"

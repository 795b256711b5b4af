"""The README's picture of `gdlab explore`: the page on noisy-plane after 20 epochs, taken in
headless Chromium (Debian's; `.ci/run` installs it). Run by docs/make_figures.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).with_name("explore.png")
GDLAB = Path(sys.executable).with_name("gdlab")


def main() -> None:
    server = subprocess.Popen([str(GDLAB), "explore", "--no-browser"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        address = server.stdout.readline().split(": ", 1)[1].strip()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(address)
            page.wait_for_selector("#data option", state="attached")
            page.select_option("#data", "noisy-plane")
            page.dispatch_event("#data", "change")
            page.fill("#lr", "0.1")
            page.click("#start")
            page.wait_for_function("document.getElementById('status').textContent"
                                   ".startsWith('epoch 0')")  # fmt: skip
            page.fill("#n", "20")
            page.click("#stepn")
            page.wait_for_function("document.getElementById('status').textContent"
                                   ".startsWith('epoch 20')")  # fmt: skip
            page.wait_for_function("document.getElementById('path').data[0].type === 'contour'")
            page.screenshot(path=str(OUT))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

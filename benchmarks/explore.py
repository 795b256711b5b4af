"""gdlab explore feels live: a step's round trip through the real server (uvicorn on
127.0.0.1, one client, HTTP keep-alive) on 10,000 rows, against the targets of the issue
(under 30 ms a step; play at 30 updates a second or more), beside the step alone in-process.

    python -m benchmarks.explore
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn

from benchmarks.common import Table, machine
from gdlab.explore.server import create_app, listen
from gdlab.explore.sessions import Offers, Session

ROWS, STEPS = 10_000, 200
CASES = {  # name: options
    "linear, full batch (exact)": {"lr": 0.1},
    "logistic, batch 256 (analytic)": {"model": "logistic", "lr": 0.1, "batch_size": 256},
    "mlp:16, full batch (autograd)": {"model": "mlp:16", "lr": 0.05, "optimizer": "adam"},
}


def table(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, 3))
    y = X @ [1.5, -2.0, 0.5] + 3 + rng.normal(size=ROWS)
    label = (y > 3).astype(int)
    path = folder / "rows.csv"
    lines = ["x1,x2,x3,y,label", *(f"{a},{b},{c},{t},{k}" for (a, b, c), t, k in
                                    zip(X, y, label, strict=True))]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(offers: Offers) -> tuple[uvicorn.Server, int]:
    listener = listen(0)
    server = uvicorn.Server(uvicorn.Config(create_app("t", offers), log_level="warning",
                                           lifespan="off"))  # fmt: skip
    threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True).start()
    return server, listener.getsockname()[1]


def post(connection: http.client.HTTPConnection, path: str, body: dict) -> dict:
    connection.request("POST", path, json.dumps(body),
                       {"X-Gdlab-Token": "t", "Content-Type": "application/json"})  # fmt: skip
    answer = connection.getresponse()
    data = json.loads(answer.read())
    assert answer.status == 200, data
    return data  # type: ignore[no-any-return]


def main() -> None:
    torch.set_num_threads(1)  # "on one core of this machine"
    print(f"machine: {machine()}; {ROWS:,} rows, {STEPS} steps of 1 epoch each, 1 thread")
    results = Table()
    with tempfile.TemporaryDirectory() as folder:
        offers = Offers([table(Path(folder))], Path(folder))
        name = next(n for n in offers.tables if n.endswith("rows.csv"))
        server, port = serve(offers)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.connect()  # headers and body leave as one packet, as a browser's fetch does
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for case, options in CASES.items():
            target = "label" if options.get("model") == "logistic" else "y"
            features = ["x1", "x2", "x3"]
            options = {**options, "tol": 0, "gtol": 0, "xtol": 0, "epochs": 10**6}
            key = post(connection, "/api/session", {"data": name, "target": target,
                                                    "features": features,
                                                    "options": options})["id"]  # fmt: skip
            trips = []
            for _ in range(STEPS):
                began = time.perf_counter()
                post(connection, f"/api/session/{key}/step", {"epochs": 1})
                trips.append(time.perf_counter() - began)
            alone = Session(offers.table(name), target, features, options)
            steps = []
            for _ in range(STEPS):
                began = time.perf_counter()
                alone.step(1)
                steps.append(time.perf_counter() - began)
            trip, step = statistics.median(trips), statistics.median(steps)
            results.add(f"{case}: round trip", "the 30 ms target", 0.030, trip, 1.0,
                        higher_is_better=False)  # fmt: skip
            results.add("   (the step alone, in-process)", "the round trip", trip, step, None,
                        higher_is_better=False)  # fmt: skip
            print(f"   play: {1 / trip:.0f} updates a second (target 30)")
        connection.close()
        browser_play(results, port, name)
        server.should_exit = True
    print("\n" + results.markdown())


def browser_play(results: Table, port: int, name: str, seconds: float = 5.0) -> None:
    """Play in headless Chromium (the page's own loop: a step, then its charts redrawn) on the
    10,000-row table for `seconds`: updates a second against the target of 30."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        print("   (chromium is not installed: the browser's play rate was not measured)")
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/?token=t")
        page.wait_for_selector("#data option", state="attached")
        page.select_option("#data", name)
        page.dispatch_event("#data", "change")
        page.select_option("#target", "y")
        page.fill("#features", "x1,x2,x3")
        page.fill("#lr", "0.01")  # slow enough that no stop test ends the play
        page.click("#start")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('epoch 0')")  # fmt: skip
        page.click("#step1")  # the first step's one-time costs (imports, a thread) left out
        page.wait_for_function("document.getElementById('status').textContent"
                               ".startsWith('epoch 1')")  # fmt: skip
        page.click("#play")
        began = time.perf_counter()
        page.wait_for_timeout(seconds * 1000)
        page.click("#play")
        elapsed = time.perf_counter() - began
        page.wait_for_timeout(500)
        epoch = int(page.text_content("#status").split(":")[0].split()[1]) - 1
        browser.close()
    rate = epoch / elapsed
    results.add("play in Chromium: s an update", "1/30 s (30 updates a second)", 1 / 30,
                1 / rate, 1.0, higher_is_better=False)  # fmt: skip
    print(f"   play: {rate:.0f} updates a second in the page (target 30)")


if __name__ == "__main__":
    main()

"""gdlab explore: the JSON API driven as a script would (starlette's test client, in-process),
against gdlab.fit; its guards (token, offered data only, upload limit); and the command."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import gdlab
from gdlab.data.builtin import DATASETS
from gdlab.explore.server import create_app, listen
from gdlab.explore.sessions import Offers


def load(name: str) -> tuple[pd.DataFrame, pd.Series]:
    """A built-in set with its column names, as the page's table is."""
    frame = pd.read_csv(DATASETS[name].path)
    target = DATASETS[name].target
    return frame.drop(columns=[target]), frame[target]


TOKEN = "t0ken"
FIXED = {"dtype": "float64", "gtol": 0, "xtol": 0, "tol": 0, "patience": 10**6}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    offers = Offers([], tmp_path)
    with TestClient(create_app(TOKEN, offers, max_upload=4096),
                    headers={"X-Gdlab-Token": TOKEN}) as client:  # fmt: skip
        yield client


def start(client: TestClient, data: str = "noisy-plane", target: str | None = None,
          **options: object) -> dict:  # fmt: skip
    response = client.post("/api/session", json={"data": data, "target": target,
                                                 "options": options})  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("name", "options"),
    [("noisy-plane", {"lr": 0.1}),  # exact (XᵀX, iterated)
     ("binary-blobs", {"model": "logistic", "lr": 0.2, "batch_size": 16}),  # analytic
     ("binary-blobs", {"model": "mlp:4", "lr": 0.01, "optimizer": "adam"})],  # autograd
)  # fmt: skip
def test_a_session_stepped_through_the_api_equals_gdlab_fit(
    client: TestClient, name: str, options: dict
) -> None:
    session = start(client, name, **FIXED, **options)
    assert session["epoch"] == 0 and session["status"] == "ready"
    for epochs in (1, 4, 15):
        state = client.post(f"/api/session/{session['id']}/step", json={"epochs": epochs}).json()
    assert state["epoch"] == 20
    X, y = load(name)
    model = options.get("model", DATASETS[name].model)
    whole = gdlab.fit(X, y, epochs=20, fast_paths="iterate", stop=lambda: False,
                      **FIXED, **(options | {"model": model}))  # fmt: skip
    assert state["history"]["train_loss"] == whole.history.train_loss
    for label, values in whole.history.params.items():
        assert state["params"][label] == values[-1]
        assert state["history"]["params"][label] == values
    assert state["status"] == whole.status


def test_rewind_returns_to_the_same_initial_point(client: TestClient) -> None:
    session = start(client, lr=0.1, **FIXED)
    key = session["id"]
    first = client.post(f"/api/session/{key}/step", json={"epochs": 7}).json()
    rewound = client.post(f"/api/session/{key}/rewind").json()
    assert rewound["epoch"] == 0 and rewound["params"] == session["params"]
    again = client.post(f"/api/session/{key}/step", json={"epochs": 7}).json()
    assert again["params"] == first["params"]
    assert again["history"] == first["history"]


def test_two_sessions_at_once_do_not_interfere(client: TestClient) -> None:
    slow, fast = start(client, lr=0.01, **FIXED), start(client, lr=0.3, **FIXED)
    alone = start(client, lr=0.01, **FIXED)
    results: dict[str, dict] = {}

    def drive(name: str, key: str) -> None:
        for _ in range(10):
            results[name] = client.post(f"/api/session/{key}/step", json={"epochs": 3}).json()

    threads = [threading.Thread(target=drive, args=("slow", slow["id"])),
               threading.Thread(target=drive, args=("fast", fast["id"]))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drive("alone", alone["id"])
    assert results["slow"]["history"] == results["alone"]["history"]
    assert results["fast"]["history"]["train_loss"] != results["slow"]["history"]["train_loss"]


def test_every_request_needs_the_token(tmp_path: Path) -> None:
    app = create_app(TOKEN, Offers([], tmp_path))
    with TestClient(app) as bare:
        for path in ("/", "/plotly.min.js", "/api/data", "/api/options"):
            response = bare.get(path)
            assert response.status_code == 403 and "token" in response.json()["error"]
        assert bare.get("/api/data", headers={"X-Gdlab-Token": "wrong"}).status_code == 403
        assert bare.post("/api/session", json={"data": "noisy-plane"}).status_code == 403
        assert bare.get(f"/api/data?token={TOKEN}").status_code == 200
        page = bare.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and f"plotly.min.js?token={TOKEN}" in page.text
        script = bare.get(f"/plotly.min.js?token={TOKEN}")
        assert script.status_code == 200 and len(script.content) > 1_000_000  # served locally


@pytest.mark.parametrize("typed", ["/etc/passwd", "../noisy-plane.csv", "tests/data/x.csv", 3])
def test_a_path_typed_in_a_request_is_refused(client: TestClient, typed: object) -> None:
    response = client.post("/api/session", json={"data": typed, "options": {}})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "is not offered here" in message and "\n" not in message


def test_bad_options_and_bad_steps_get_the_clis_one_line_messages(client: TestClient) -> None:
    response = client.post("/api/session", json={"data": "noisy-plane", "options": {"lr": -1}})
    assert response.status_code == 400
    with pytest.raises(gdlab.GdlabError) as raised:
        gdlab.fit(*load("noisy-plane"), lr=-1)
    assert response.json()["error"] == str(raised.value)
    key = start(client)["id"]
    assert client.post(f"/api/session/{key}/step", json={"epochs": 0}).status_code == 400
    assert client.post("/api/session/nope/step", json={"epochs": 1}).status_code == 404
    assert client.post(f"/api/session/{key}/step", content=b"{").status_code == 400
    response = client.post("/api/session", json={"data": "noisy-plane", "target": "nope"})
    assert response.status_code == 400 and "nope" in response.json()["error"]
    assert client.get("/api/data").status_code == 200  # and the server keeps serving


def test_an_upload_is_checked_like_a_file_and_limited_in_size(client: TestClient) -> None:
    csv = "x,y\n1,2\n2,4.1\n3,5.9\n4,8\n"
    table = client.post("/api/upload?name=mine.csv", content=csv.encode()).json()
    assert table["columns"] == ["x", "y"] and table["name"].startswith("upload:")
    state = start(client, table["name"], "y", lr=0.1, **FIXED)
    assert state["table"] == table["name"] and state["features"] == ["x"]
    stepped = client.post(f"/api/session/{state['id']}/step", json={"epochs": 5}).json()
    assert stepped["epoch"] == 5
    bad = client.post("/api/upload?name=bad.csv", content=b"x,y\n1,2\n2,oops\n")
    start_bad = client.post("/api/session", json={"data": bad.json().get("name", ""),
                                                 "target": "y"})  # fmt: skip
    assert 400 in (bad.status_code, start_bad.status_code)
    assert "oops" in (bad.json().get("error", "") + start_bad.json().get("error", ""))
    too_big = client.post("/api/upload?name=big.csv", content=b"x,y\n" + b"1,2\n" * 2000)
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    wrong = client.post("/api/upload?name=model.pt", content=b"12")
    assert wrong.status_code == 400 and "CSV or Parquet" in wrong.json()["error"]


def test_a_run_that_diverges_says_why(client: TestClient) -> None:
    session = start(client, lr=5.0, optimizer="gd", dtype="float64")
    state = client.post(f"/api/session/{session['id']}/step", json={"epochs": 50}).json()
    assert state["status"] == "diverged"
    assert state["limit"] is not None and state["limit"] < 5.0
    assert "2/λmax" in state["message"] or "stable" in state["message"]


def test_the_update_is_written_out_with_its_numbers(client: TestClient) -> None:
    session = start(client, "tutorial-line", lr=0.01, optimizer="gd", standardize=False, **FIXED)
    state = client.post(f"/api/session/{session['id']}/step", json={"epochs": 2}).json()
    w_before = state["history"]["params"]["coef[x]"][0]
    w_after = state["history"]["params"]["coef[x]"][1]
    line = next(line for line in state["update"] if line.startswith("coef[x] ="))
    gradient = (w_before - w_after) / 0.01
    assert f"{w_before:.6g} - 0.01 * {gradient:.6g} = {w_after:.6g}" in line
    # dL/dw of the mean squared error by hand, at the parameters before the step
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0])
    b_before = state["history"]["params"]["intercept"][0]
    by_hand = float(np.mean(2 * (w_before * x + b_before - y) * x))
    assert gradient == pytest.approx(by_hand, rel=1e-9)


def test_the_command_prints_its_address_first_and_refuses_a_bad_file(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gdlab", "explore", "--no-browser"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    refused = subprocess.run([*command, str(empty)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("gdlab: error:") and "empty" in refused.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith("gdlab explore: http://127.0.0.1:") and "?token=" in first
        address = first.split(": ", 1)[1].strip()
        with urllib.request.urlopen(address, timeout=30) as page:
            assert page.status == 200 and b"gdlab explore" in page.read()
        with pytest.raises(urllib.error.HTTPError) as refused_page:
            urllib.request.urlopen(address.split("?")[0], timeout=30)
        assert refused_page.value.code == 403
    finally:
        server.terminate()
        server.communicate(timeout=30)


# -- the page, in headless Chromium, with every request outside 127.0.0.1 refused ----------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1 in this process: its address."""
    import uvicorn

    listener = listen(0)
    app = create_app(TOKEN, Offers([], tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def then_status(page: object, button: str, begins: str) -> None:
    """Click `button` and wait until the status line begins with `begins`."""
    page.click(button)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        f"document.getElementById('status').textContent.startsWith({begins!r})"
    )


def shown_parameters(page: object) -> dict[str, str]:
    cells = page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#params tr", "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    return dict(cells)


@pytest.mark.slow
def test_the_page_uploads_steps_rewinds_restores_a_link_and_explains_a_divergence(
    served: str, browser: object, tmp_path: Path
) -> None:
    frame = pd.read_csv(DATASETS["noisy-plane"].path)
    upload = tmp_path / "my-data.csv"
    frame.to_csv(upload, index=False)
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def only_here(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url.startswith(served):
            route.continue_()  # type: ignore[attr-defined]
        else:
            outside.append(url)
            route.abort()  # type: ignore[attr-defined]

    page.context.route("**/*", only_here)
    page.goto(f"{served}/?token={TOKEN}")
    page.wait_for_selector("#data option", state="attached")
    page.set_input_files("#upload", str(upload))
    page.wait_for_function("document.getElementById('target').options.length === 3")
    page.select_option("#target", "y")
    page.fill("#lr", "0.1")
    page.select_option("#optimizer", "gd")
    then_status(page, "#start", "epoch 0")
    page.fill("#n", "20")
    then_status(page, "#stepn", "epoch 20")
    shown = shown_parameters(page)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = gdlab.fit(frame[["x1", "x2"]], frame["y"], lr=0.1, optimizer="gd", epochs=20,
                          fast_paths="iterate")  # fmt: skip
    expected = {name: f"{values[19]:.8g}" for name, values in whole.history.params.items()}
    assert {name: f"{float(text):.8g}" for name, text in shown.items()} == expected
    assert "coef[x1] = " in page.text_content("#update")

    then_status(page, "#rewind", "epoch 0")
    then_status(page, "#stepn", "epoch 20")
    assert shown_parameters(page) == shown

    page.click("#link")
    link = page.url
    assert "#" in link
    again = browser.new_page()  # type: ignore[attr-defined]
    again.on("pageerror", lambda error: errors.append(str(error)))
    again.goto(link)
    again.wait_for_function("document.getElementById('status').textContent.startsWith('epoch 20')")
    assert shown_parameters(again) == shown

    page.fill("#lr", "5")
    then_status(page, "#start", "epoch 0")
    page.fill("#n", "50")
    page.click("#stepn")
    page.wait_for_function("document.getElementById('status').textContent.includes('diverged')")
    assert "2/λmax" in page.text_content("#message") or "stable" in page.text_content("#message")
    assert errors == [] and outside == []


def test_a_step_sends_only_the_rows_the_page_lacks(client: TestClient) -> None:
    key = start(client, lr=0.1, **FIXED)["id"]
    first = client.post(f"/api/session/{key}/step", json={"epochs": 5}).json()
    more = client.post(f"/api/session/{key}/step", json={"epochs": 3, "since": 5}).json()
    whole = client.get(f"/api/session/{key}").json()["history"]
    assert more["since"] == 5 and more["history"]["epoch"] == [6, 7, 8]
    assert first["history"]["train_loss"] + more["history"]["train_loss"] == whole["train_loss"]
    for name, values in whole["params"].items():
        assert first["history"]["params"][name] + more["history"]["params"][name] == values
    bad = client.post(f"/api/session/{key}/step", json={"epochs": 1, "since": -1})
    assert bad.status_code == 400 and "`since`" in bad.json()["error"]

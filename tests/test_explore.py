"""gdlab explore: the JSON API driven as a script would (starlette's test client, in-process),
against gdlab.fit; its guards (token, offered data only, upload limit); and the command."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import gdlab
from gdlab.data.builtin import DATASETS
from gdlab.explore.server import create_app, listen
from gdlab.explore.sessions import Offers
from tests.conftest import CliRun


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


def test_a_target_named_on_the_command_line_is_the_files_default(tmp_path: Path) -> None:
    data = tmp_path / "mine.csv"
    data.write_text("x,y\n1,2\n2,4\n3,6\n")
    offers = Offers([data], tmp_path, target="y")
    assert offers.table(str(data)).target == "y"
    with pytest.raises(gdlab.GdlabError, match="--target 'z' is not a column"):
        Offers([data], tmp_path, target="z")


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
        port = address.split(":")[2].split("/")[0]
        taken = subprocess.run([*command, "--port", port], capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert taken.returncode == 2 and taken.stderr.startswith(f"gdlab: error: --port {port}:")
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


def test_the_page_names_each_element_once() -> None:
    """The charts are found by id: an id given twice draws a chart into the wrong element."""
    import re

    from gdlab.explore.server import PAGE

    ids = re.findall(r'id="([^"]+)"', PAGE.read_text())
    assert len(ids) > 30 and len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


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

    page.wait_for_function("document.getElementById('path').data[0].type === 'contour'")
    assert page.evaluate("document.querySelectorAll('.chart.js-plotly-plot').length") == 4
    assert page.evaluate("document.getElementById('picture').data.length") == 1  # predicted
    assert page.evaluate("document.getElementById('layers').data.length") == 2  # weight, bias

    page.select_option("#vary", "rates")
    page.click("#compare")
    page.wait_for_function("document.getElementById('loss').data.length === 3")
    labels = page.evaluate("document.getElementById('loss').data.map(t => t.name)")
    assert [label.split(" (")[0] for label in labels] == ["too small", "just right", "too large"]
    assert labels[2].endswith("diverged")

    page.click("#tab-function")
    page.fill("#expression", "(3+3*a)**2")
    page.fill("#fstart", "a=0.5")
    page.click("#descend")
    page.wait_for_function("document.getElementById('steps').textContent.length > 0")
    assert "f'(a) = 18a + 18" in page.text_content("#message")
    assert "a = 0.500000 - 0.05 * 27.0000 = -0.850000" in page.text_content("#steps")
    page.click("#tab-data")

    page.fill("#lr", "5")
    then_status(page, "#start", "epoch 0")
    page.fill("#n", "50")
    page.click("#stepn")
    page.wait_for_function("document.getElementById('status').textContent.includes('diverged')")
    assert "2/λmax" in page.text_content("#message") or "stable" in page.text_content("#message")

    page.fill("#lr", "0.05")
    page.fill("#batch_size", "16")
    then_status(page, "#start", "epoch 0")
    then_status(page, "#update1", "epoch 0 (+16 rows)")
    then_status(page, "#update1", "epoch 0 (+32 rows)")
    assert page.evaluate("document.getElementById('path').data.some(t => t.name === 'each update')")
    page.click("#link")
    inside = browser.new_page()  # type: ignore[attr-defined]
    inside.on("pageerror", lambda error: errors.append(str(error)))
    inside.goto(page.url)
    inside.wait_for_function(
        "document.getElementById('status').textContent.startsWith('epoch 0 (+32 rows)')"
    )
    assert shown_parameters(inside) == shown_parameters(page)
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


def test_the_surface_covers_the_path_and_its_final_point_is_the_reported_loss(
    client: TestClient,
) -> None:
    options = {"lr": 0.05, "batch_size": 16, **FIXED}  # mini-batch: a zigzag off the grid's centre
    key = start(client, **options)["id"]
    state = client.post(f"/api/session/{key}/step", json={"epochs": 12}).json()
    other = start(client, **(options | {"lr": 0.2}))["id"]
    client.post(f"/api/session/{other}/step", json={"epochs": 12})
    drawn = client.get(f"/api/session/{key}/surface?with={other}").json()
    assert drawn["names"] == ["coef[x1]", "intercept"] and drawn["slice"]
    whole = gdlab.fit(*load("noisy-plane"), epochs=12, fast_paths="iterate", stop=lambda: False,
                      **options)  # fmt: skip
    assert drawn["final_loss"] == pytest.approx(whole.loss, rel=1e-9)
    theirs = client.get(f"/api/session/{other}").json()["history"]["params"]
    for axis, name in (("a", "coef[x1]"), ("b", "intercept")):
        covered = [*state["history"]["params"][name], *theirs[name], drawn["start"][axis == "b"]]
        assert min(drawn[axis]) <= min(covered) and max(covered) <= max(drawn[axis])
    assert len(drawn["loss"]) == len(drawn["b"]) and len(drawn["loss"][0]) == len(drawn["a"])
    chosen = client.get(f"/api/session/{key}/surface?params=coef[x2],coef[x1]").json()
    assert chosen["names"] == ["coef[x2]", "coef[x1]"]
    assert client.get(f"/api/session/{key}/surface?params=nope,x").status_code == 400
    fresh = start(client)["id"]
    assert "step at least one epoch" in client.get(f"/api/session/{fresh}/surface").json()["error"]


def test_the_model_is_drawn_over_its_data_with_its_own_predictions(client: TestClient) -> None:
    line = start(client, "tutorial-line", lr=0.05, **FIXED)
    picture = client.post(f"/api/session/{line['id']}/step", json={"epochs": 30}).json()["picture"]
    whole = gdlab.fit(*load("tutorial-line"), lr=0.05, epochs=30, fast_paths="iterate",
                      stop=lambda: False, **FIXED)  # fmt: skip
    assert picture["kind"] == "line" and picture["x"] == [1.0, 2.0, 3.0, 4.0]
    assert picture["fit"] == whole.predict(np.array(picture["grid"])[:, None]).tolist()
    blobs = start(client, "binary-blobs", lr=0.2, **FIXED)
    picture = client.post(f"/api/session/{blobs['id']}/step", json={"epochs": 10}).json()["picture"]
    whole = gdlab.fit(*load("binary-blobs"), model="logistic", lr=0.2, epochs=10,
                      fast_paths="iterate", stop=lambda: False, **FIXED)  # fmt: skip
    grid = np.column_stack([np.tile(picture["a"], len(picture["b"])),
                            np.repeat(picture["b"], len(picture["a"]))])  # fmt: skip
    probability = whole.predict_proba(grid)[:, 1].reshape(len(picture["b"]), len(picture["a"]))
    assert picture["kind"] == "boundary" and picture["level"] == 0.5
    np.testing.assert_allclose(picture["z"], probability, rtol=1e-12)


def test_the_rates_shown_are_the_curvatures(client: TestClient) -> None:
    state = start(client, lr=0.1, standardize=False, **FIXED)
    X = load("noisy-plane")[0].to_numpy()
    A = np.column_stack([X, np.ones(len(X))])
    eigenvalues = np.linalg.eigvalsh(2 * A.T @ A / len(A))
    assert state["limit"] == pytest.approx(2 / eigenvalues[-1], rel=1e-9)
    # the fastest constant rate 2/(λmax+λmin), kept 5% inside the limit (here they are close)
    fastest, limit = 2 / (eigenvalues[-1] + eigenvalues[0]), 2 / eigenvalues[-1]
    assert state["best"] == pytest.approx(min(fastest, 0.95 * limit), rel=1e-9)
    assert "2/(λmax+λmin)" in state["why"]
    adam = start(client, lr=0.1, optimizer="adam", **FIXED)
    assert adam["limit"] is None and adam["best"] is None  # no curvature limit for adam


def test_a_saved_session_is_a_run_folder_plot_report_and_resume_accept(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cli: Callable[..., CliRun] = request.getfixturevalue("gdlab")  # (the name is the module's)
    runs = tmp_path / "runs"
    app = create_app(TOKEN, Offers([], tmp_path), runs=runs)
    with TestClient(app, headers={"X-Gdlab-Token": TOKEN}) as client:
        csv = b"x,y\n1,2.1\n2,3.9\n3,6.2\n4,7.8\n5,10.1\n"
        table = client.post("/api/upload?name=mine.csv", content=csv).json()
        key = start(client, table["name"], "y", lr=0.1, **FIXED)["id"]
        assert client.post(f"/api/session/{key}/save").status_code == 400  # nothing yet
        client.post(f"/api/session/{key}/step", json={"epochs": 20})
        out = Path(client.post(f"/api/session/{key}/save").json()["out"])
    assert out.parent == runs and (out / "data.csv").read_bytes() == csv
    from gdlab.runs import load_run

    saved, _ = load_run(out)
    assert len(saved.history) == 20
    assert cli("plot", str(out)).code == 0 and (out / "surface.png").exists()
    assert cli("report", str(out)).code == 0 and (out / "report.html").exists()
    resumed = cli("fit", "--resume", str(out), "--epochs", "30")
    assert resumed.code == 0, resumed.err
    frame = pd.read_csv(out / "data.csv")
    whole = gdlab.fit(frame[["x"]], frame["y"], lr=0.1, epochs=30, fast_paths="iterate",
                      stop=lambda: False, **FIXED)  # fmt: skip
    again, _ = load_run(out)
    assert again.history.train_loss == whole.history.train_loss


def test_descend_in_the_page_is_gdlab_descend(client: TestClient) -> None:
    from gdlab.expression import parse
    from gdlab.tools.descend import descend

    body = {"expression": "(3+3*a)**2", "start": "a=0.5", "lr": 0.05, "steps": 12}
    answer = client.post("/api/descend", json=body).json()
    assert answer["f"] == "(3a + 3)^2" and answer["derivatives"] == {"a": "18a + 18"}
    path = descend(parse("(3+3*a)**2"), {"a": 0.5}, lr=0.05, steps=12)
    assert answer["paths"][0]["points"] == [list(p) for p in path.points]
    assert answer["paths"][0]["gradients"][0] == [18 * 0.5 + 18]  # dL/dA = 18(A+1), by hand
    assert len(answer["grid"]["a"]) == len(answer["grid"]["f"])
    two = client.post("/api/descend", json={"expression": "rosenbrock", "optimizers": "gd,adam",
                                            "lr": 0.002, "steps": 100}).json()  # fmt: skip
    assert [p["optimizer"] for p in two["paths"]] == ["gd", "adam"]
    assert len(two["grid"]["f"]) == len(two["grid"]["b"]) == 80
    for bad in (
        {"expression": "__import__('os')"},
        {"expression": "a**2", "lr": -1},
        {"expression": "a**2", "steps": 10**9},
        {"expression": ""},
    ):
        response = client.post("/api/descend", json=bad)
        assert response.status_code == 400 and "\n" not in response.json()["error"]


def test_a_mini_batch_run_steps_one_update_at_a_time(client: TestClient) -> None:
    # unscaled, so that the update is lr * dL/dw of the coefficients shown; 0.01 < 2/λmax
    options = {"lr": 0.01, "batch_size": 16, "optimizer": "gd", "standardize": False, **FIXED}
    key = start(client, "noisy-plane", **options)["id"]
    every: list[dict[str, float]] = []
    whole = gdlab.fit(*load("noisy-plane"), epochs=2, fast_paths="iterate", stop=lambda: False,
                      on_step=every.append, **options)  # fmt: skip
    states = [client.post(f"/api/session/{key}/step", json={"updates": 1}).json()
              for _ in range(3)]  # fmt: skip
    for k, state in enumerate(states):
        assert state["params"] == every[k] and state["steps"] == [every[k]]
        assert state["epoch"] == 0 and state["inside"] == 16 * (k + 1)
        assert state["status"] == "running" and "inside epoch 1" in state["message"]
    w_before, w_after = every[1]["coef[x1]"], every[2]["coef[x1]"]
    gradient = (w_before - w_after) / 0.01
    assert (
        f"coef[x1] = {w_before:.6g} - 0.01 * {gradient:.6g} = {w_after:.6g}"
        in (states[2]["update"][0])
    )
    state = client.post(f"/api/session/{key}/step", json={"epochs": 2}).json()
    assert state["epoch"] == 2 and state["history"]["train_loss"] == whole.history.train_loss
    both = client.post(f"/api/session/{key}/step", json={"epochs": 1, "updates": 1})
    assert both.status_code == 400 and "not both" in both.json()["error"]


def test_a_networks_rates_come_from_its_hessian_at_the_initial_point(tmp_path: Path) -> None:
    import torch
    from torch.func import functional_call

    from gdlab.explore.sessions import Session

    offers = Offers([], tmp_path)
    session = Session(offers.table("binary-blobs"), None, None,
                      {"model": "mlp:4", "lr": 0.1, "dtype": "float64"})  # fmt: skip
    state = session.current()
    net, loss_fn, data = session.run.training.initial_problem()
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts, at = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(torch.Size(shape).numel())
            parts[name] = theta[at : at + size].reshape(shape)
            at += size
        return loss_fn(functional_call(net, parts, (data.X,)), data.y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    lambda_max = float(torch.linalg.eigvalsh(hessian)[-1])
    assert state["limit"] == pytest.approx(2 / lambda_max, rel=0.02)
    assert "initial point" in state["why"]
    assert session.current()["best"] <= state["limit"]
    mae = Session(offers.table("noisy-plane"), None, None, {"loss": "mae", "lr": 0.1}).current()
    assert mae["limit"] is None and mae["best"] is None and "λmax = 0" in mae["why"]

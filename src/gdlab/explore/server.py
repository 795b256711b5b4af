"""The explorer's HTTP side: a Starlette app with the page, plotly.js and a JSON API.

Starlette (with uvicorn to serve it) because the API is a handful of JSON routes and one page:
it needs no more than an ASGI toolkit, and its test client drives the app in-process. The
page has no build step: plain HTML and JavaScript, and the plotly.js that the plotly package
already ships, served from here (nothing is fetched from the network).

Safe by default, as Jupyter is: the server binds 127.0.0.1, and every request (the page, its
script and each API call) carries the token printed at start, in the `X-Gdlab-Token` header or
the `token` query parameter; uploads are refused past a size limit; data are named, never read
from a path typed in a request (`sessions.Offers`).

API (JSON in, JSON out; errors are {"error": "<one line>"} with status 400, 403, 404 or 413):
- GET  /api/data                     the tables offered: name, columns, default target, model
- GET  /api/options                  gdlab.fit's options: name, default, allowed values, help
- POST /api/upload?name=FILE         the file's bytes as the body; its table's description
- POST /api/session                  {"data", "target", "features", "options"} -> {"id", ...state}
- POST /api/session/{id}/step        {"epochs": n, "since": K} -> the state after n more
                                     epochs, its history from row K on (default 0: all of it);
                                     {"updates": n} takes n optimisation steps (mini-batches)
- POST /api/session/{id}/rewind      -> state at the initial point
- GET  /api/session/{id}?since=K     the state, with the history from row K on
- GET  /api/session/{id}/surface?params=a,b&with=ID,ID
                                     the loss over two parameters under the path (and the
                                     paths of the sessions `with` names)
- POST /api/session/{id}/save        the run as a new run folder under --runs: {"out"}
- POST /api/descend                  {"expression", "start", "lr", "steps", "optimizers"}: each
                                     optimizer's path on a typed-in function, and f on a grid
A state: epoch, status, message, loss, params (by name), lr, limit (the largest stable rate),
best and why (the rate gdlab recommends, where the curvature decides it), history (epoch,
train_loss, val_loss, grad_norm, params, grad_norms), update (the last update written out with
its numbers) and picture (the model over its data).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gdlab.errors import GdlabError
from gdlab.explore import views
from gdlab.explore.sessions import (
    ENGINE,
    Offers,
    Session,
    Sessions,
    UnknownSessionError,
    row_number,
)

PAGE = Path(__file__).with_name("page.html")
MAX_UPLOAD = 50 * 2**20  # bytes
Handler = Callable[[Request], Awaitable[Response]]


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(
    token: str, offers: Offers, *, max_upload: int = MAX_UPLOAD, runs: Path = Path("runs")
) -> Starlette:
    """The app: `token` guards every route; `offers` is all the data it may read; saved runs
    go to new folders under `runs`."""
    sessions = Sessions()

    def guarded(handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            given = request.headers.get("x-gdlab-token") or request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return _error("this server needs the token that `gdlab explore` printed: open "
                              "the address it printed, with its ?token=...", 403)  # fmt: skip
            try:
                return await handler(request)
            except UnknownSessionError as error:
                return _error(str(error), 404)
            except GdlabError as error:
                return _error(str(error), 400)

        return checked

    async def page(request: Request) -> Response:
        html = PAGE.read_text(encoding="utf-8").replace("?token=TOKEN", f"?token={token}")
        return HTMLResponse(html)

    async def script(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="application/javascript")

    async def tables(request: Request) -> Response:
        return JSONResponse([table.describe() for table in offers.tables.values()])

    async def table_of_options(request: Request) -> Response:
        return JSONResponse(option_table())

    async def upload(request: Request) -> Response:
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_upload:
            return _too_large(declared, max_upload)
        content = await request.body()
        if len(content) > max_upload:
            return _too_large(len(content), max_upload)
        name = request.query_params.get("name", "upload.csv")
        table = await asyncio.to_thread(offers.upload, name, content)
        return JSONResponse(table.describe())

    async def start(request: Request) -> Response:
        body = await _json_body(request)
        features = body.get("features")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise GdlabError("`options` must be an object of gdlab.fit's keywords.")
        table = offers.table(body.get("data"))
        session = await asyncio.to_thread(Session, table, body.get("target"), features, options)
        return JSONResponse({"id": sessions.add(session), **session.current()})

    async def step(request: Request) -> Response:
        session = sessions.get(request.path_params["key"])
        body = await _json_body(request)
        arguments = (body.get("epochs"), body.get("since", 0), body.get("updates"))
        return JSONResponse(await asyncio.to_thread(session.step, *arguments))

    async def rewind(request: Request) -> Response:
        session = sessions.get(request.path_params["key"])
        return JSONResponse(await asyncio.to_thread(session.rewind))

    async def state(request: Request) -> Response:
        session = sessions.get(request.path_params["key"])
        since = row_number(request.query_params.get("since", "0"))
        return JSONResponse(await asyncio.to_thread(session.current, since))

    async def surface(request: Request) -> Response:
        session = sessions.get(request.path_params["key"])
        pair = request.query_params.get("params")
        chosen = None
        if pair:
            names = [name.strip() for name in pair.split(",")]
            if len(names) != 2:
                raise GdlabError(f"`params` {pair!r}: name exactly two parameters.")
            chosen = (names[0], names[1])
        others = [sessions.get(key) for key in request.query_params.get("with", "").split(",")
                  if key]  # fmt: skip
        return JSONResponse(await asyncio.to_thread(session.surface, chosen, others))

    async def save(request: Request) -> Response:
        session = sessions.get(request.path_params["key"])
        out = await asyncio.to_thread(session.save, runs)
        return JSONResponse({"out": str(out)})

    async def descend(request: Request) -> Response:
        body = await _json_body(request)
        return JSONResponse(await asyncio.to_thread(_descent, body))

    routes = [
        Route("/", guarded(page)),
        Route("/plotly.min.js", guarded(script)),
        Route("/api/data", guarded(tables)),
        Route("/api/options", guarded(table_of_options)),
        Route("/api/upload", guarded(upload), methods=["POST"]),
        Route("/api/session", guarded(start), methods=["POST"]),
        Route("/api/session/{key}/step", guarded(step), methods=["POST"]),
        Route("/api/session/{key}/rewind", guarded(rewind), methods=["POST"]),
        Route("/api/session/{key}/surface", guarded(surface)),
        Route("/api/session/{key}/save", guarded(save), methods=["POST"]),
        Route("/api/session/{key}", guarded(state)),
        Route("/api/descend", guarded(descend), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _descent(body: dict[str, Any]) -> dict[str, Any]:
    with ENGINE:  # torch.optim and sympy in this process, one at a time as the sessions
        return views.descent(body)


def option_table() -> list[dict[str, Any]]:
    """gdlab.fit's options as the page shows them: name, default, what is allowed, help (the
    table the command line is generated from, so the page and the CLI cannot disagree)."""
    from gdlab.config import ACTIVATIONS, LOSSES, OPTIMIZERS, OPTIONS, SCHEDULES

    choices = {"optimizer": OPTIMIZERS, "loss": LOSSES, "activation": ACTIVATIONS,
               "schedule": SCHEDULES}  # fmt: skip
    return [
        {"name": option.name, "default": option.text_default, "allowed":
         option.constraint.describe, "help": option.help,
         "choices": list(choices.get(option.name, ()))}
        for option in OPTIONS
    ]  # fmt: skip


def listen(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:`port` (0: any free one). Replies leave at once
    (TCP_NODELAY, inherited by every accepted connection): without it a reply's headers and
    body wait on the client's delayed acknowledgement, 40 ms a request."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind(("127.0.0.1", port))
        listener.listen(128)  # requests wait from now on: the printed address answers
    except OSError as error:
        listener.close()
        raise GdlabError(f"`port` {port}: cannot listen on 127.0.0.1:{port} ({error.strerror}); "
                         "choose another port, or 0 for any free one.") from None  # fmt: skip
    return listener


def new_token() -> str:
    return secrets.token_hex(24)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise GdlabError("the request's body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise GdlabError("the request's body must be a JSON object.")
    return body


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _too_large(size: int, limit: int) -> JSONResponse:
    return _error(f"the upload is {size / 2**20:.1f} MiB; the limit is {limit / 2**20:.0f} MiB "
                  "(start gdlab explore with --max-upload MIB, or name the file on its command "
                  "line).", 413)  # fmt: skip

"""gdlab explore: the browser page (starlette and uvicorn load only when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from gdlab.cli.app import cli


@cli.command()
@click.argument("data", nargs=-1, type=click.Path(path_type=Path))
@click.option("--target", help="the column to predict in the DATA files (chosen in the page too)")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="port on 127.0.0.1 (0: any free port)")  # fmt: skip
@click.option("--no-browser", is_flag=True, help="print the address without opening a browser")
@click.option("--max-upload", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="largest upload accepted, in MiB")  # fmt: skip
@click.option("--runs", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="where the page's Save writes run folders")  # fmt: skip
def explore(
    data: tuple[Path, ...],
    target: str | None,
    port: int,
    no_browser: bool,
    max_upload: int,
    runs: Path,
) -> None:
    """Step gradient descent live in a browser page, on DATA files, uploads or built-in sets.

    The first line printed is the page's address with its token; only this machine can open it.
    """
    import threading
    import webbrowser

    import uvicorn

    from gdlab.explore.server import create_app, listen, new_token
    from gdlab.explore.sessions import Offers, upload_folder

    with upload_folder() as folder:
        offers = Offers(list(data), Path(folder), target)  # each file is read and checked now
        token = new_token()
        app = create_app(token, offers, max_upload=max_upload * 2**20, runs=runs)
        listener = listen(port)
        address = f"http://127.0.0.1:{listener.getsockname()[1]}/?token={token}"
        click.echo(f"gdlab explore: {address}")
        click.echo("  Ctrl-C stops the server.", err=True)
        if not no_browser:
            threading.Timer(0.5, webbrowser.open, args=(address,)).start()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        server.run(sockets=[listener])

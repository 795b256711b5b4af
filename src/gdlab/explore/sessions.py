"""What the browser page drives: data it may read, and runs stepped a few epochs at a time.

A session is a `gdlab.stepping.SteppedRun` (the engine's steppable run, not a copy of it) on
one table: the page asks for n more epochs or a rewind and gets the state back as plain
JSON-ready data. The page may read only the data it is offered: the built-in sets, the files
named on the command line, and files uploaded to this server; never a path typed in a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdlab.errors import GdlabError, listed
from gdlab.explore import views

UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
MAX_SESSIONS = 64  # the oldest is dropped past this: a page left open does not grow the server
RUNNING = ("max_epochs", "interrupted")  # statuses a run continues from (budget, count)
# One run at a time in this process: building a model seeds torch's global generator, and
# warnings filters are process-wide, so two sessions stepped at once could disturb each other.
ENGINE = threading.Lock()


@dataclass
class Table:
    """A table the page may use: its name in requests, the file, its default target, and its
    contents once read (each session on it starts from them, not from another read)."""

    name: str
    path: Path
    target: str | None = None
    model: str | None = None
    columns: list[str] = field(default_factory=list)
    contents: Any = None  # a DataFrame or NumericTable (`gdlab.data.files.read_table`)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "model": self.model,
                "columns": self.columns}  # fmt: skip


class Offers:
    """The tables this server may read, by name: built-in sets, files named on the command
    line (by their path as given; `target` their default target) and uploads (by 'upload:'
    and a digest of their bytes)."""

    def __init__(self, files: list[Path], folder: Path, target: str | None = None) -> None:
        from gdlab.data.builtin import DATASETS

        self.folder = folder
        self.tables: dict[str, Table] = {}
        for dataset in DATASETS.values():
            self.add(Table(dataset.name, dataset.path, dataset.target, dataset.model))
        for path in files:
            table = self.add(Table(str(path), path, target))
            if target is not None and target not in table.columns:
                raise GdlabError(f"--target {target!r} is not a column of {path}; its columns are "
                                 f"{listed(table.columns)}.")  # fmt: skip

    def add(self, table: Table) -> Table:
        from gdlab.data.files import read_table

        table.contents = read_table(table.path)
        table.columns = [str(name) for name in table.contents.columns]
        self.tables[table.name] = table
        return table

    def upload(self, filename: str, content: bytes) -> Table:
        """Keep an uploaded file (checked as any data file) under a name made of its digest."""
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise GdlabError(
                f"upload {filename!r}: give a CSV or Parquet file ({', '.join(UPLOAD_SUFFIXES)})."
            )
        digest = hashlib.sha256(content).hexdigest()[:16]
        name = f"upload:{digest}"
        if name in self.tables:
            return self.tables[name]
        path = self.folder / f"{digest}{suffix}"
        path.write_bytes(content)
        try:
            return self.add(Table(name, path))
        except GdlabError as error:  # name the upload, not the server's copy of it
            path.unlink()
            raise GdlabError(str(error).replace(str(path), f"upload {filename!r}")) from None

    def table(self, name: object) -> Table:
        if not isinstance(name, str) or name not in self.tables:
            offered = listed(sorted(n for n in self.tables if not n.startswith("upload:")))
            raise GdlabError(
                f"data {name!r} is not offered here: choose one of {offered}, upload a file, or "
                "name it on the command line (`gdlab explore FILE`); paths typed in the page "
                "are not read."
            )
        return self.tables[name]


class Session:
    """One stepped run on one table (stepped under ENGINE, one run at a time)."""

    def __init__(self, table: Table, target: str | None, features: list[str] | None,
                 options: dict[str, Any]) -> None:  # fmt: skip
        from gdlab.data.arrays import as_matrix, as_vector
        from gdlab.data.columns import select
        from gdlab.stepping import SteppedRun

        target = target or table.target
        if target is None:
            raise GdlabError(f"`target` is required: name the column of {table.name} to predict.")
        if table.model is not None and "model" not in options:
            options = {"model": table.model, **options}
        X, y, names = select(table.contents, table.name, target, features)
        self.table, self.target, self.features, self.options = table, target, names, options
        self.X = as_matrix(X)[0]
        self.y = as_vector(y, len(self.X))
        with ENGINE:
            self.run = SteppedRun(X, y, feature_names=names, **options)
            self.rates = views.rates(self.run.training)
            self.initial = self.run.training.initial_parameters()  # (builds a seeded model)
            self.before = self.initial

    def step(
        self, epochs: object = None, since: object = 0, updates: object = None
    ) -> dict[str, Any]:
        """Advance `epochs` epochs, or take `updates` optimisation steps (mini-batches; a
        full-batch epoch is one); the state with the history from row `since` on (what a page
        holds already need not travel again)."""
        since = row_number(since)
        if updates is None and epochs is None:
            epochs = 1
        if updates is not None and epochs is not None:
            raise GdlabError("give `epochs` or `updates` to step, not both.")
        count = epochs if updates is None else updates
        if not isinstance(count, int) or isinstance(count, bool):
            name = "epochs" if updates is None else "updates"
            raise GdlabError(f"`{name}` to step must be an integer >= 1. Got {count!r}.")
        with ENGINE:
            result = self.run.result
            if result is not None and result.status not in RUNNING:
                return self.state(since)  # ended by a stop test: stepping changes nothing
            self.before = self._now()  # where this step starts: its update's left side
            if updates is None:
                self.run.advance(count)
            else:
                self.run.take(count)
            return self.state(since)

    def _now(self) -> dict[str, float]:
        """The recorded parameters now: after the last update taken, else the last epoch's."""
        result = self.run.result
        if self.run.steps:
            return self.run.steps[-1]
        if result is None or not len(result.history):
            return self.initial
        return {name: values[-1] for name, values in result.history.params.items()}

    def current(self, since: int = 0) -> dict[str, Any]:
        """The state, read while no run steps (a request may come during another's step)."""
        with ENGINE:
            return self.state(since)

    def rewind(self) -> dict[str, Any]:
        with ENGINE:
            self.run.rewind()
            return self.state()

    def state(self, since: int = 0) -> dict[str, Any]:
        """Where the run is: its epoch, status and why, the last loss and parameters, the
        history from row `since` on, the last update written out with its numbers, the
        stable and best rates, and the model over its data."""
        result = self.run.result
        base = {"table": self.table.name, "target": self.target, "features": self.features,
                "options": self.options, "lr": self.run.training.opts.lr, **self.rates,
                "since": since if result is not None else 0,
                "history": views.history(result, since),
                "picture": views.picture(result, self.X, self.y, self.features)}  # fmt: skip
        if result is None:
            return base | {"epoch": 0, "status": "ready", "message": "", "loss": None,
                           "params": views.numbers(self.initial), "update": []}  # fmt: skip
        h, steps = result.history, self.run.steps
        inside = result.loop_state.position if result.loop_state is not None else 0
        counted = result.status == "interrupted"  # stopped by `updates`, not by a person
        now = self._now()
        if len(steps) > 1:
            before = steps[-2]
        elif steps or len(h) < 2:
            before = self.before
        else:
            before = {name: values[-2] for name, values in h.params.items()}
        return base | {
            "epoch": len(h),
            "inside": inside,  # rows of the next epoch already stepped over
            "status": "running" if counted else result.status,
            "message": self._inside(inside) if counted and inside else result.message,
            "loss": views.number(h.train_loss[-1]) if len(h) else None,
            "params": views.numbers(now),
            "steps": [views.numbers(step) for step in steps],
            "update": views.update(result, before, now, one=bool(steps) or not self._batched()),
        }

    def _batched(self) -> bool:
        """Whether an epoch takes more than one update (mini-batches)."""
        size = self.run.training.opts.batch_size
        return size is not None and size < len(self.run.training.train_rows)

    def _inside(self, rows: int) -> str:
        n, done = len(self.run.training.train_rows), self.run.epochs_done
        return f"inside epoch {done + 1}: {rows} of {n} rows stepped over"

    def surface(self, pair: tuple[str, str] | None, others: list[Session]) -> dict[str, Any]:
        """The loss surface under this run's path, covering the paths of `others` too."""
        with ENGINE:
            covering = [s.run.result for s in others if s.run.result is not None]
            return views.surface(self.run.training, self.run.result, pair, covering)

    def save(self, root: Path) -> Path:
        """The run as a run folder under `root` (`gdlab plot`, `report` and `fit --resume`
        read it); an upload is copied into it, as the data those commands read again."""
        from gdlab.outputs import RunLock, claim_default_out_dir
        from gdlab.runs import save_run

        with ENGINE:
            result = self.run.result
            if result is None:
                raise GdlabError("nothing to save yet: step at least one epoch.")
            out = claim_default_out_dir(root)
            with RunLock(out, created=True):
                data_path = self.table.path.resolve()
                if self.table.name.startswith("upload:"):
                    data_path = out / f"data{self.table.path.suffix}"
                    shutil.copyfile(self.table.path, data_path)
                source = self.table.name if self.table.model is not None else str(data_path)
                # what `fit --resume` checks the data against (a fit with checkpoints keeps it)
                kept = dataclasses.replace(result, fingerprint=self.run.training.data_fingerprint)
                save_run(kept, out, target=self.target, source=source, data_path=str(data_path))
            return out


class UnknownSessionError(GdlabError):
    """A session id this server does not hold."""


class Sessions:
    """Every session of this server, by id; the oldest is dropped past MAX_SESSIONS."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    def add(self, session: Session) -> str:
        key = uuid.uuid4().hex
        with self.lock:
            self.sessions[key] = session
            while len(self.sessions) > MAX_SESSIONS:
                del self.sessions[next(iter(self.sessions))]
        return key

    def get(self, key: str) -> Session:
        with self.lock:
            if key not in self.sessions:
                raise UnknownSessionError(
                    f"session {key!r} is unknown (the server was restarted, or it was "
                    "dropped): start it again."
                )
            return self.sessions[key]


def row_number(since: object) -> int:
    """`since` as a request gives it: a row number of the history, >= 0."""
    if isinstance(since, str) and since.isdigit():
        since = int(since)
    if not isinstance(since, int) or isinstance(since, bool) or since < 0:
        raise GdlabError(f"`since` must be a row number >= 0. Got {since!r}.")
    return since


def upload_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="gdlab-explore-")

"""Where a command writes: a fresh run folder by default, refusals to replace what the user
has (or what the command reads), and the lock that keeps two processes out of one folder."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import filelock

from gdlab.errors import GdlabError

LOCK_FILE = ".gdlab.lock"


def claim_default_out_dir(root: Path = Path("runs")) -> Path:
    """Create and return runs/<time>[-k]; mkdir is atomic, so parallel runs get distinct folders."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        candidate = root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def check_not_input(outputs: list[Path], inputs: list[Path], option: str = "--out") -> None:
    """Refuse to write over a file this command reads, even with --overwrite: paths are
    compared after resolving symlinks, so no spelling of the input slips through."""
    protected = {path.resolve() for path in inputs if path.exists()}
    for path in outputs:
        if path.resolve() in protected:
            raise GdlabError(
                f"{option} would replace {path}, which this command reads; nothing was "
                f"written. Choose another {option}."
            )


def check_out_file(target: Path, *, overwrite: bool, option: str = "--out") -> None:
    """Refuse an existing file unless overwriting was asked for, and a folder always."""
    if target.is_dir():
        raise GdlabError(f"{option} {target} is a folder; give a file path.")
    if target.exists() and not overwrite:
        raise GdlabError(f"{option} {target} exists; choose another file or pass --overwrite.")


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse a folder that holds anything unless overwriting was asked for."""
    if out.exists() and not out.is_dir():
        raise GdlabError(f"--out {out} is a file; give a folder path.")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not overwrite:
        raise GdlabError(
            f"--out {out} exists and is not empty; choose another folder or pass --overwrite."
        )


class RunLock:
    """Hold `folder`/.gdlab.lock for the life of a run; a folder in use is refused at once."""

    def __init__(self, folder: Path, *, created: bool = False) -> None:
        self.folder = folder
        self.lock: filelock.BaseFileLock | None = None
        self.created = created  # by this process: removed again if the run fails before writing

    def __enter__(self) -> RunLock:
        self.created = self.created or not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.folder / LOCK_FILE, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise GdlabError(
                f"{self.folder} is in use by another gdlab process (lock {LOCK_FILE}); wait for "
                f"it to finish or choose another folder."
            ) from None
        self.lock = lock
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if self.lock is None:
            return
        self.lock.release()
        lock_file = self.folder / LOCK_FILE
        if kind is not None and self.created and list(self.folder.iterdir()) == [lock_file]:
            lock_file.unlink()  # a run that failed before writing anything leaves no trace
            self.folder.rmdir()

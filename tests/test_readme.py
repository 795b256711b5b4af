"""The README stays true: every shell example is run and its output compared with what is shown.

A shown line must be a line the command prints today (whitespace aside; a long line may be
wrapped over several in the README), in order, its messages on stderr before its report on
stdout; `...` stands for lines left out. Only the time a choice took may differ. Files an
example reads are written by the test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliRun

README = Path(__file__).resolve().parents[1] / "README.md"
FILES = {  # what the examples read besides the built-in data sets
    "data.csv": "size,price\n1,2\nabc,3\n",
    "plane.csv": "x1,x2,y\n1,2,5.1\n2,1,3.9\n3,4,11.2\n4,3,9.8\n5,6,17.1\n6,5,14.9\n",
}
NOT_RUN = {  # commands that need a person at the keyboard, with where they are tested instead
    "gdlab fit big.csv": "stopped with Ctrl-C by hand; tests/test_signals.py and test_resume.py",
    "gdlab fit --resume runs/big": "continues the run above",
    "gdlab explore": "a server that runs until Ctrl-C; tests/test_explore.py starts it",
}
TIMES = re.compile(r"\b\d+(\.\d+)?(e-?\d+)? s\b")  # seconds: the one thing that may differ


def examples() -> list[tuple[str, list[str]]]:
    """(command, shown output lines) for every `$ gdlab ...` line in a fenced block."""
    found: list[tuple[str, list[str]]] = []
    fenced = False
    current: list[str] | None = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fenced, current = not fenced, None  # a block's output ends with the block
            continue
        if fenced and line.startswith("$ gdlab"):
            current = []
            found.append((line[2:].split("  #")[0].strip(), current))
        elif current is not None and not line.startswith("$ "):
            current.append(line)
    return found


def normal(text: str) -> str:
    return TIMES.sub("T s", " ".join(text.split()))


def shown_in(shown: list[str], printed: list[str]) -> str:
    """'' when every shown line is a printed line, in order ('...' skips); else what is not."""
    lines = [normal(line) for line in printed if line.strip()]
    position, buffer = 0, ""
    for line in (normal(line) for line in shown if line.strip()):
        if line == "..." or line == "^C":
            continue
        buffer = f"{buffer} {line}".strip()
        rest = lines[position:]
        if buffer in rest:
            position += rest.index(buffer) + 1
            buffer = ""
        elif not any(candidate.startswith(buffer) for candidate in rest):
            return buffer
    return buffer


@pytest.mark.slow
@pytest.mark.parametrize(("command", "shown"), examples(), ids=lambda v: str(v)[:60])
def test_every_readme_example_prints_what_the_readme_shows(
    gdlab: Callable[..., CliRun],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    shown: list[str],
) -> None:
    skipped = next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)
    if skipped:
        pytest.skip(skipped)
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    run = gdlab(*shlex.split(command)[1:])
    printed = run.err.splitlines() + run.out.splitlines()  # as a terminal shows them here
    missing = shown_in(shown, printed)
    assert not missing, f"README shows {missing!r}; {command} prints:\n{run.err}{run.out}"


def test_a_changed_digit_or_a_missing_line_is_caught() -> None:
    printed = ["gdlab: lr auto: 0.5 [the choice took 1.7 s]", "status: converged after 12",
               "train loss: 1.00675", "wrote run"]  # fmt: skip
    assert (
        shown_in(["gdlab: lr auto: 0.5 [the choice took 3 s]", "...", "wrote run"], printed) == ""
    )
    assert shown_in(["train loss: 1.00676"], printed) == "train loss: 1.00676"
    assert shown_in(["status: converged", "after 12"], printed) == ""  # wrapped in the README
    assert shown_in(["wrote run", "train loss: 1.00675"], printed) != ""  # out of order


def test_the_readme_has_examples_to_check() -> None:
    commands = [command for command, _ in examples()]
    assert len(commands) >= 8 and all(command.startswith("gdlab ") for command in commands)


def test_every_picture_in_the_readme_is_made_by_make_figures() -> None:
    """`make docs` (docs/make_figures.sh) remakes every picture the README shows, and no other
    file in docs/ is left behind that nothing makes."""
    text = README.read_text()
    shown = set(re.findall(r"\]\((docs/[^)]+\.(?:png|gif))\)", text))
    script = (README.parent / "docs" / "make_figures.sh").read_text()
    made = set(re.findall(r"(docs/[\w.-]+\.(?:png|gif))", script))
    pictures = {f"docs/{p.name}" for p in (README.parent / "docs").iterdir()
                if p.suffix in (".png", ".gif")}  # fmt: skip
    assert shown and shown <= made, shown - made
    assert pictures == made, pictures ^ made


def test_every_training_option_is_in_the_readmes_table() -> None:
    from gdlab.config import OPTIONS

    text = README.read_text()
    for option in OPTIONS:
        flag = option.name.replace("_", "-")
        spellings = (f"`--{flag}", f"--{flag}`", f"/ --{flag}", f"`--no-{flag}")
        assert any(spelling in text for spelling in spellings), flag

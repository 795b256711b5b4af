"""Read a CSV, Parquet, .npz or .npy file into a table of named columns, with precise errors."""

from __future__ import annotations

import csv
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gdlab.errors import GdlabError

if TYPE_CHECKING:
    import pandas as pd

    from gdlab.data.arrays import FloatArray


class NumericTable:
    """A table whose every cell is a finite number: column names and one float64 matrix.
    `gdlab.data.columns` reads it as it reads a DataFrame."""

    def __init__(self, columns: list[str], values: FloatArray) -> None:
        self.columns, self.values = columns, values

    def __len__(self) -> int:
        return len(self.values)

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.columns.index(name)]

    def matrix(self, names: list[str]) -> FloatArray:
        return self.values[:, [self.columns.index(name) for name in names]]


SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".npz", ".npy")


def read_table(path: Path) -> pd.DataFrame:
    """Load a data file as a DataFrame; every failure is a `GdlabError` naming the file."""
    suffix = check_data_file(path)
    if suffix in (".parquet", ".pq"):
        frame = _read_parquet(path)
    elif suffix == ".npy":
        frame = _read_npy(path)
    elif suffix == ".npz":
        frame = _read_npz(path)
    else:
        frame = _read_delimited(path, delimiter_of(suffix))
    if len(frame) == 0:
        raise GdlabError(f"{path} has a header but no data rows; add rows of data.")
    return frame


def check_data_file(path: Path) -> str:
    """The file's suffix, lower case, once the path is known to be a regular, non-empty file;
    a `GdlabError` naming the problem otherwise."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.10-3.12 report a loop this way
            raise GdlabError(f"{path} is a symbolic link that loops; point it at a file.") from None
        except OSError as error:
            if "loop" in str(error).lower() or error.errno == 40:  # ELOOP
                raise GdlabError(
                    f"{path} is a symbolic link that loops; point it at a file."
                ) from None
    if not path.exists():
        raise GdlabError(f"{path}: no such file; check the path (or run `gdlab datasets`).")
    if path.is_dir():
        raise GdlabError(f"{path} is a folder, not a data file; give a CSV, Parquet, .npz or .npy.")
    if not stat.S_ISREG(path.stat().st_mode):  # /dev/zero, a FIFO: endless or never-ending
        raise GdlabError(
            f"{path} is not a regular file (a device, FIFO or socket); save the data to a file."
        )
    if path.stat().st_size == 0:
        raise GdlabError(f"{path} is empty; give a file with a header row and data rows.")
    return path.suffix.lower()


def delimiter_of(suffix: str) -> str:
    return "\t" if suffix == ".tsv" else ","


def _read_delimited(path: Path, delimiter: str) -> pd.DataFrame:
    _check_line_lengths(path)
    header = _check_rectangular(path, delimiter)
    if path.stat().st_size <= SMALL_BYTES:
        small = _read_small(path, delimiter, header)
        if small is not None:
            return small  # type: ignore[return-value]  # a NumericTable serves as a frame
    if len(header) > WIDE_COLUMNS:
        wide = _read_wide(path, delimiter, header)
        if wide is not None:
            return wide
    import pandas as pd

    try:
        return read_csv_quietly(path, sep=delimiter, encoding="utf-8-sig", skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise GdlabError(f"{path} is empty; give a file with a header row and data rows.") from None
    except (pd.errors.ParserError, ValueError) as error:
        raise GdlabError(f"{path} could not be parsed as CSV: {error}".replace("\n", " ")) from None


WIDE_COLUMNS = 10_000  # above this, an all-numeric CSV is parsed as one float matrix
SMALL_BYTES = 1 << 18  # up to this, an all-numeric CSV is read without importing pandas


def _read_small(path: Path, delimiter: str, header: list[str]) -> NumericTable | None:
    """A small all-numeric CSV as a `NumericTable`, without pandas (whose import, 0.5 s, is
    most of a tiny fit's time beside torch's). None (read it with pandas, which names any bad
    cell) when a name repeats or is empty, or a cell is empty, not a plain decimal number, or
    not finite. Python's float() rounds correctly, as pandas' default parser does."""
    import math

    import numpy as np

    if len(set(header)) != len(header) or not all(name.strip() for name in header):
        return None
    rows: list[list[float]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                values = [float(cell) for cell in row if "_" not in cell]
            except ValueError:
                return None
            if len(values) != len(row) or not all(map(math.isfinite, values)):
                return None
            rows.append(values)
    if not rows:
        return None
    return NumericTable(header, np.array(rows, dtype=np.float64))


def _read_wide(path: Path, delimiter: str, header: list[str]) -> pd.DataFrame | None:
    """A wide all-numeric CSV as one float64 block: pandas' parser spends about 40 µs on each
    column (40 s for 10^6 columns of 5 rows); numpy reads the same file in under a second.
    None (read it with pandas, which names any bad cell) when a name repeats or is empty, or a
    cell is not a plain number."""
    import numpy as np
    import pandas as pd

    if len(set(header)) != len(header) or not all(name.strip() for name in header):
        return None
    try:
        values = np.loadtxt(path, delimiter=delimiter, skiprows=1, ndmin=2, comments=None,
                            encoding="utf-8-sig", dtype=np.float64)  # fmt: skip
    except ValueError:
        return None
    if values.shape[0] == 0:
        return None
    return pd.DataFrame(values, columns=header)


MAX_LINE_BYTES = 16 << 20  # a CSV line longer than this is not a table row
SCAN_BYTES = 1 << 20


def _check_line_lengths(path: Path) -> None:
    """One pass in blocks of SCAN_BYTES, before any line is read whole: a file without line
    breaks (a 2 GB single line) is refused in bounded memory."""
    line, run = 1, 0
    with path.open("rb") as handle:
        while block := handle.read(SCAN_BYTES):
            last = block.rfind(b"\n")
            if last < 0:
                run += len(block)
            else:
                line += block.count(b"\n")
                run = len(block) - last - 1
            if run > MAX_LINE_BYTES:
                raise GdlabError(
                    f"{path}, line {line}: longer than {MAX_LINE_BYTES >> 20} MiB without a line "
                    f"break; a CSV file has one row per line."
                )


def _check_rectangular(path: Path, delimiter: str) -> list[str]:
    """Every non-blank row must have as many fields as the header (pandas pads short rows);
    returns the header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return check_fields(path, handle, delimiter)
    except UnicodeDecodeError as error:
        raise GdlabError(
            f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8 CSV."
        ) from None


def check_fields(
    path: Path,
    lines: Iterable[str],
    delimiter: str,
    *,
    first_line: int = 1,
    header: list[str] | None = None,
) -> list[str]:
    """The header (the first non-blank row of `lines`, unless given), once every other
    non-blank row has as many fields; `first_line` is the file's number of the first line."""
    reader = csv.reader(lines, delimiter=delimiter)
    width = None if header is None else len(header)
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if width is None:
                width, header = len(row), row
            elif len(row) != width:
                raise GdlabError(
                    f"{path}, line {first_line - 1 + reader.line_num}: {len(row)} fields where "
                    f"the header has {width}; make every row have {width} fields."
                )
    except csv.Error as error:
        raise GdlabError(f"{path} could not be parsed as CSV: {error}.") from None
    if header is None:
        raise GdlabError(f"{path} is empty; give a file with a header row and data rows.")
    return header


def _read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:  # a page that carries a checksum is checked (pyarrow's default reads it unchecked)
        return pd.read_parquet(path, page_checksum_verification=True)
    except MemoryError:  # pyarrow's ArrowMemoryError is one
        raise GdlabError(out_of_memory(path)) from None
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise GdlabError(unreadable_parquet(path, error)) from None


def unreadable_parquet(path: Path, error: Exception) -> str:
    """The one line for a file pyarrow cannot read as Parquet: why, and the fix."""
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    if "CRC checksum verification failed" in reason:  # a page that is not what was written
        return (
            f"{path} is damaged: a page's bytes do not match the checksum written with them (a "
            f"disk or a copy changed them); write it again from its source."
        )
    if "magic bytes" in reason:  # pyarrow's words for a file that does not end as Parquet does
        return (
            f"{path} is not a readable Parquet file (it does not end with a Parquet footer: it "
            f"was cut off, or is in another format); write it again from its source, or if it "
            f"holds CSV text, name it .csv."
        )
    said = f"{type(error).__name__}: {reason.rstrip('.')}" if reason else type(error).__name__
    return f"{path} is not a readable Parquet file ({said}); write it again from its source."


def out_of_memory(path: Path) -> str:
    return (
        f"{path} does not fit in the memory this process may use; stream it (--stream, "
        f"or stream=True), or free memory."
    )


def _read_npy(path: Path) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    _check_npy_header(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise GdlabError(f"{path} is not a readable .npy file ({error}).") from None
    if array.ndim != 2:
        raise GdlabError(
            f"{path} holds a {array.ndim}-D array of shape {array.shape}; a .npy data file must be "
            f"2-D (rows, columns), with the target as one of the columns c0, c1, ..."
        )
    return pd.DataFrame(array, columns=[f"c{i}" for i in range(array.shape[1])])


def _check_npy_header(path: Path) -> None:
    """The header's shape and dtype against the file's size, before any data is read: a
    header may declare 10^12 rows in a file of a few bytes."""
    import numpy as np

    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)  # fmt: skip
            shape, _, dtype = read(handle)
            offset = handle.tell()
    except (ValueError, OSError) as error:
        raise GdlabError(f"{path} is not a readable .npy file ({error}).") from None
    if dtype.fields is not None or dtype.hasobject or dtype.kind not in "biuf":
        raise GdlabError(
            f"{path} holds {dtype} values; a .npy data file must hold numbers (int or float) "
            f"in a plain 2-D array."
        )
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != path.stat().st_size - offset:
        raise GdlabError(
            f"{path} declares shape {shape} ({declared} bytes) but holds "
            f"{path.stat().st_size - offset} bytes of data; the file is damaged or truncated."
        )


def _read_npz(path: Path) -> pd.DataFrame:
    """Arrays `X` (2-D) and `y` become columns x0.. and y; otherwise each 1-D array is a column."""
    import numpy as np
    import pandas as pd

    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError) as error:
        raise GdlabError(f"{path} is not a readable .npz file ({error}).") from None
    columns: dict[str, object] = {}
    for name, array in arrays.items():
        names = [f"{name.lower()}{i}" for i in range(array.shape[1])] if array.ndim == 2 else [name]
        taken = [column for column in names if column in columns]
        if taken:
            raise GdlabError(
                f"{path}: array {name!r} gives column {taken[0]!r}, which another array gives "
                f"too; rename one of the arrays."
            )
        if array.ndim == 2:
            for i, column in enumerate(names):
                columns[column] = array[:, i]
        elif array.ndim == 1:
            columns[name] = array
        else:
            raise GdlabError(f"{path}: array {name!r} is {array.ndim}-D; use 1-D or 2-D arrays.")
    lengths = {name: len(column) for name, column in columns.items()}  # type: ignore[arg-type]
    if len(set(lengths.values())) > 1:
        raise GdlabError(f"{path}: arrays have different lengths {lengths}; make them equal.")
    if not columns:
        raise GdlabError(f"{path} holds no arrays; save X and y with numpy.savez.")
    return pd.DataFrame(columns)


def read_csv_quietly(source: Any, **options: Any) -> pd.DataFrame:
    """pandas.read_csv without its DtypeWarning for a column of mixed types: the column checks
    that follow name the cell that is not a number, in one line."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.DtypeWarning)
        frame: pd.DataFrame = pd.read_csv(source, **options)
    return frame

"""Standardization in blocks against numpy's whole-array mean and standard deviation."""

from __future__ import annotations

import numpy as np
import pytest

from gdlab.data import arrays
from gdlab.data.rows import RowSubset
from gdlab.data.scaling import Scaler, constant_columns


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 rows, so that every test crosses many block boundaries."""
    original = arrays.row_blocks
    monkeypatch.setattr(arrays, "row_blocks", lambda n, size=7: original(n, size))


@pytest.mark.parametrize("magnitude", [1e-160, 1e-3, 1.0, 1e6, 1e160, 1e300])
def test_moments_match_numpy_at_every_magnitude(magnitude: float) -> None:
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(50, 3)) + np.array([0.0, 5.0, -2.0])) * magnitude
    scaler = Scaler.fit(values, center=True, enabled=True)
    peak = np.abs(values).max(axis=0)  # numpy's std overflows beyond 1e154: compare scaled
    np.testing.assert_allclose(scaler.shift / peak, values.mean(axis=0) / peak, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale / peak, (values / peak).std(axis=0), rtol=1e-12)
    without = Scaler.fit(values, center=False, enabled=True)
    rms = np.sqrt(((values / peak) ** 2).mean(axis=0))
    assert not without.shift.any()
    np.testing.assert_allclose(without.scale / peak, rms, rtol=1e-12)


def test_constant_columns_are_found_past_the_first_block() -> None:
    values = np.ones((40, 4))
    values[:, 1] = np.arange(40)
    values[33, 2] = 2.0  # differs only in a late block
    np.testing.assert_array_equal(constant_columns(values), [True, False, False, True])
    scaler = Scaler.fit(values, center=True, enabled=True)
    assert np.isinf(scaler.scale[[0, 3]]).all() and np.isfinite(scaler.scale[[1, 2]]).all()
    target = Scaler.fit(values[:, :1], center=True, enabled=True, target=True)
    assert target.scale[0] == 1.0  # a constant target keeps scale 1


def test_a_subset_of_rows_scales_as_those_rows_copied_out() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1]
    values[:, 2] = 4.0
    values[rng.permutation(60)[:20], 2] = 9.0  # constant only on some rows
    rows = np.flatnonzero(values[:, 2] == 4.0)[::-1]  # out of order
    subset = Scaler.fit(RowSubset.of(values, rows), center=True, enabled=True)
    copied = Scaler.fit(values[rows], center=True, enabled=True)
    np.testing.assert_allclose(subset.shift, copied.shift, rtol=1e-13)
    np.testing.assert_array_equal(subset.scale[2], np.inf)  # constant within the subset
    np.testing.assert_allclose(subset.scale[:2], copied.scale[:2], rtol=1e-13)
    assert RowSubset.of(values, np.arange(60)).rows is None  # all rows in order: a view


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_as_is_transform_in_the_dtype_and_order_asked(order: str, dtype: type) -> None:
    """In chunks through a small buffer (40,000 rows: three chunks), the values that the
    whole-array transform gives, rounded once to `dtype`, in the input's memory order."""
    rng = np.random.default_rng(1)
    values = np.asarray(rng.normal(size=(40_000, 3)) * [1.0, 1e-3, 1e4] + [3.0, 0.0, -1e6],
                        order=order)  # fmt: skip
    scaler = Scaler.fit(values, center=True, enabled=True)
    got = scaler.transform_as(values, dtype)
    assert got.dtype == dtype and got.shape == values.shape
    assert got.flags.f_contiguous == (order == "F") and got.flags.c_contiguous == (order == "C")
    np.testing.assert_array_equal(got, scaler.transform(values).astype(dtype))

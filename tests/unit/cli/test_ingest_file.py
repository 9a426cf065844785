"""`driftloop ingest` reads CSV and Parquet files in bounded batches."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from driftloop.shared.cli.commands.ingest import RejectedLine, record_batches
from driftloop.shared.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_is_read_in_batches_with_every_row(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"x": range(12_345), "c": ["a", "b", "c"] * 4115})
    path = tmp_path / f"data{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    batches = list(record_batches(path, batch_rows=1000))
    assert max(b.num_rows for b in batches) <= 1000
    assert sum(b.num_rows for b in batches) == len(frame)
    assert batches[0].schema.names == ["x", "c"]


def test_unknown_file_type_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("a: 1")
    with pytest.raises(InvalidInput, match="use .csv or .parquet"):
        record_batches(path)


def test_broken_csv_says_where(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(InvalidInput, match="cannot read"):
        list(record_batches(path))


def test_broken_csv_rows_are_rejected_with_a_reason_and_the_rest_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6\n7,8\n")
    rejected: list[RejectedLine] = []
    batches = list(record_batches(path, rejected=rejected))
    assert sum(b.num_rows for b in batches) == 2
    assert [b.to_pydict() for b in batches][0] == {"a": [1, 7], "b": [2, 8]}
    assert [r.reason for r in rejected] == [
        "expected 2 fields, found 3",
        "expected 2 fields, found 1",
    ]
    assert [r.text for r in rejected] == ["3,4,5", "6"]

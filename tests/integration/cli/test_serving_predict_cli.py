"""`driftloop predict` against a live V2 server (in-process, real gRPC, batching on): CSV and
Parquet scored in chunks into Parquet with predictions equal to the model's own, rows logged,
and clear errors for an unknown model, missing columns and an unreadable file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from serving_models import make_pipeline, serving_in_thread, training_frame
from typer.testing import CliRunner

from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger, PredictionRecord
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.cli.app import app
from driftloop.shared.cli.commands.predict import predict_file
from driftloop.shared.errors import InvalidInput, NotFound
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

PIPELINE = make_pipeline()


class Logged(PredictionLogger):
    """Keeps what would be logged (the flusher never runs here)."""

    def __init__(self) -> None:
        super().__init__(self._unused)
        self.records: list[PredictionRecord] = []

    @staticmethod
    async def _unused(*_: Any) -> None:
        raise AssertionError("not flushed in this test")

    def offer(self, record: PredictionRecord) -> bool:
        self.records.append(record)
        return True


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Logged]]:
    """Serving's V2 servicer on a free port, its event loop in a background thread."""
    slot = ModelSlot()
    slot.swap(LoadedModel("churn", "4", PIPELINE, artifacts.signature(PIPELINE), "sha"))
    logged = Logged()
    service = InferenceService(slot, logged, batching=BatchPolicy(max_batch_size=64))
    with serving_in_thread(service) as address:
        yield address, logged


def settings(address: str, tmp_path: Path) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path / "data", addresses={"serving": address})


def frame(rows: int = 530) -> pd.DataFrame:
    data, _ = training_frame(rows=rows, seed=3)
    data.loc[5, "x1"] = np.nan  # a missing value the pipeline imputes
    data.insert(0, "customer", [f"c{i:04d}" for i in range(rows)])  # extra column kept
    return data


def test_csv_and_parquet_scored_in_chunks(served: Any, tmp_path: Path) -> None:
    address, logged = served
    data = frame()
    expected = PIPELINE.predict(data[["x1", "color", "x2"]]).tolist()
    proba = PIPELINE.predict_proba(data[["x1", "color", "x2"]])
    csv, parquet = tmp_path / "in.csv", tmp_path / "in.parquet"
    data.to_csv(csv, index=False)
    data.to_parquet(parquet, index=False, row_group_size=100)
    before = len(logged.records)
    for source in (csv, parquet):
        out = tmp_path / f"{source.suffix[1:]}-out.parquet"
        summary = predict_file(settings(address, tmp_path), source, out, "churn", batch_rows=64)
        assert (summary.rows, summary.versions) == (len(data), ("4",))
        assert summary.chunks >= len(data) // 64
        table = pq.read_table(out)
        assert table.column_names == [
            "customer",
            "x1",
            "color",
            "x2",
            "prediction",
            "probability_no",
            "probability_yes",
        ]
        result = table.to_pandas()
        assert result["customer"].tolist() == data["customer"].tolist()
        assert result["prediction"].tolist() == expected
        np.testing.assert_allclose(result[["probability_no", "probability_yes"]], proba)
        assert not (tmp_path / f"{out.name}.partial").exists()
    logged_rows = sum(len(r.frame) for r in logged.records[before:])
    assert logged_rows == 2 * len(data)


def test_errors_name_the_problem(served: Any, tmp_path: Path) -> None:
    address, _ = served
    common = settings(address, tmp_path)
    good = tmp_path / "good.csv"
    frame(10).to_csv(good, index=False)
    out = tmp_path / "out.parquet"
    with pytest.raises(NotFound, match="model 'nope' is not served"):
        predict_file(common, good, out, "nope")
    with pytest.raises(NotFound, match="version '9' is not loaded"):
        predict_file(common, good, out, "churn", version="9")
    missing = tmp_path / "missing.csv"
    frame(10).drop(columns=["color"]).to_csv(missing, index=False)
    with pytest.raises(InvalidInput, match=r"lacks feature column\(s\) \['color'\]"):
        predict_file(common, missing, out, "churn")
    text = tmp_path / "text.csv"
    text.write_text("x1,color,x2\nabc,red,1\n")
    with pytest.raises(InvalidInput, match="cannot read"):
        predict_file(common, text, out, "churn")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInput, match="cannot read"):
        predict_file(common, broken, out, "churn")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_the_cli_command(served: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address, _ = served
    monkeypatch.setenv("DRIFTLOOP_ADDRESSES", f'{{"serving": "{address}"}}')
    source, out = tmp_path / "in.csv", tmp_path / "scored.parquet"
    frame(20).to_csv(source, index=False)
    runner = CliRunner()
    args = ["predict", str(source), "--model", "churn", "-o", str(out), "--data-dir", str(tmp_path)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "20 rows scored by churn version 4" in done.output
    assert pq.read_table(out).num_rows == 20
    failed = runner.invoke(app, [*args[:3], "nope", *args[4:]])
    assert failed.exit_code == 1 and "model 'nope' is not served" in failed.output

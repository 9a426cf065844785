"""`driftloop predict` with a regressor served over real gRPC: the output's `prediction` column is
float64 and equal to the pipeline's own predictions (no probability columns); a swap to a model
answering otherwise during a run (classifier -> regressor) stops it with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from serving_models import (
    FEATURES,
    make_pipeline,
    make_regressor,
    regression_frame,
    serving_in_thread,
)

from driftloop.services.serving.core.batching import BatchPolicy
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.cli.commands.predict import predict_file
from driftloop.shared.errors import InvalidInput
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration

REGRESSOR = make_regressor()
CLASSIFIER = make_pipeline()


def loaded(pipeline: Any, version: str) -> LoadedModel:
    return LoadedModel("price", version, pipeline, artifacts.signature(pipeline), "sha")


def settings(address: str, tmp_path: Path) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path / "data", addresses={"serving": address})


def test_a_regressor_writes_float64_predictions(tmp_path: Path) -> None:
    data, _ = regression_frame(rows=230, seed=4)
    data.loc[7, "x2"] = np.nan  # a missing value the pipeline imputes
    data.insert(0, "house", [f"h{i}" for i in range(len(data))])
    source, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    data.to_parquet(source, index=False)
    slot = ModelSlot()
    slot.swap(loaded(REGRESSOR, "2"))
    service = InferenceService(slot, batching=BatchPolicy(max_batch_size=64))
    with serving_in_thread(service) as address:
        summary = predict_file(settings(address, tmp_path), source, out, "price", batch_rows=50)
    assert (summary.rows, summary.chunks, summary.versions) == (230, 5, ("2",))
    table = pq.read_table(out)
    assert table.column_names == ["house", "x1", "color", "x2", "prediction"]
    assert table.schema.field("prediction").type == pa.float64()
    want = REGRESSOR.predict(data[FEATURES])
    np.testing.assert_allclose(table.column("prediction").to_numpy(), want, rtol=1e-12)


class SwapAfterFirstChunk:
    """Stands in for the progress bar: once the first chunk is written, production becomes a
    regressor (the chunks sent from then on are answered by it)."""

    def __init__(self, slot: ModelSlot) -> None:
        self.slot = slot
        self.updates = 0

    def add_task(self, *_: Any, **__: Any) -> int:
        return 0

    def update(self, *_: Any, **__: Any) -> None:
        self.updates += 1
        if self.updates == 1:
            self.slot.swap(loaded(REGRESSOR, "2"))


def test_a_swap_to_a_regressor_during_a_run_is_a_clear_error(tmp_path: Path) -> None:
    data, _ = regression_frame(rows=200, seed=5)
    source, out = tmp_path / "in.csv", tmp_path / "out.parquet"
    data.to_csv(source, index=False)
    slot = ModelSlot()
    slot.swap(loaded(CLASSIFIER, "1"))
    service = InferenceService(slot, batching=BatchPolicy(max_batch_size=64))
    with serving_in_thread(service) as address, pytest.raises(InvalidInput) as failed:
        predict_file(
            settings(address, tmp_path),
            source,
            out,
            "price",
            batch_rows=20,
            progress=SwapAfterFirstChunk(slot),  # type: ignore[arg-type]
        )
    message = str(failed.value)
    assert "changed its answers during the run: version 1 gave columns ['prediction'" in message
    assert "'probability_no', 'probability_yes']" in message and "version 2 gives" in message
    assert not out.exists() and not list(tmp_path.glob("*.partial"))

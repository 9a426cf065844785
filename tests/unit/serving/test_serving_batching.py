"""Micro-batching: concurrent small requests share one predict call, per loaded version; a bad
request fails alone; answers and prediction-log rows stay with their own request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_models import make_pipeline

from driftloop.services.serving.core import codec
from driftloop.services.serving.core.batching import BatchPolicy, MicroBatcher, Part
from driftloop.services.serving.core.inference import InferenceService
from driftloop.services.serving.core.prediction_log import PredictionLogger
from driftloop.services.serving.core.slot import LoadedModel, ModelSlot
from driftloop.shared import artifacts
from driftloop.shared.artifacts import Feature, ModelSignature
from driftloop.shared.errors import InvalidInput, TooLarge

pytestmark = pytest.mark.unit

SIG = ModelSignature((Feature("a", "numeric"), Feature("b", "numeric")), ("0", "1"))


class Doubler:
    """A stand-in scorer that records each call: label = str(a * 2); refuses a == 13."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[Part]]] = []

    def __call__(
        self, loaded: LoadedModel, decoded: Sequence[codec.Rows], parts: Sequence[Part]
    ) -> tuple[np.ndarray, np.ndarray]:
        frame = codec.rows_frame(decoded, pd.Index(["a", "b"]))
        self.calls.append((loaded.version, len(frame), list(parts)))
        if (frame["a"] == 13).any():
            raise InvalidInput("13 is unlucky")
        labels = (frame["a"] * 2).astype(int).astype(str).to_numpy(dtype=object)
        return labels, np.tile([0.25, 0.75], (len(frame), 1))


def loaded(version: str) -> LoadedModel:
    return LoadedModel("m", version, None, SIG, "sha")


def rows(*a: float) -> codec.Rows:
    matrix = np.array([[v, 0.0] for v in a])
    return codec.Rows(len(matrix), matrix=matrix)


async def test_concurrent_requests_share_one_predict_and_get_their_own_rows() -> None:
    score = Doubler()
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=64))
    v1 = loaded("1")
    results = await asyncio.gather(
        batcher.submit(v1, rows(1), "r1"),
        batcher.submit(v1, rows(2, 3), "r2"),
        batcher.submit(v1, rows(4), "r3"),
    )
    assert [list(labels) for labels, _ in results] == [["2"], ["4", "6"], ["8"]]
    assert [proba.shape for _, proba in results] == [(1, 2), (2, 2), (1, 2)]
    assert score.calls == [("1", 4, [("r1", 1), ("r2", 2), ("r3", 1)])]


async def test_versions_are_never_mixed_in_one_batch() -> None:
    score = Doubler()
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=64))
    v1, v2 = loaded("1"), loaded("2")
    await asyncio.gather(
        batcher.submit(v1, rows(1), "a"),
        batcher.submit(v2, rows(2), "b"),
        batcher.submit(v1, rows(3), "c"),
    )
    assert sorted((v, n) for v, n, _ in score.calls) == [("1", 2), ("2", 1)]


async def test_a_full_batch_is_flushed_at_once_and_the_rest_waits_for_the_next() -> None:
    score = Doubler()
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=3))
    v1 = loaded("1")
    await asyncio.gather(*(batcher.submit(v1, rows(i), f"r{i}") for i in range(5)))
    assert [n for _, n, _ in score.calls] == [3, 2]
    assert not batcher.accepts(3) and batcher.accepts(2)


async def test_a_bad_request_fails_alone() -> None:
    score = Doubler()
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=64))
    v1 = loaded("1")
    good, bad, also_good = await asyncio.gather(
        batcher.submit(v1, rows(1), "ok1"),
        batcher.submit(v1, rows(13), "bad"),
        batcher.submit(v1, rows(5), "ok2"),
        return_exceptions=True,
    )
    assert isinstance(bad, InvalidInput) and "unlucky" in str(bad)
    assert list(good[0]) == ["2"] and list(also_good[0]) == ["10"]


async def test_a_timed_wait_also_batches() -> None:
    score = Doubler()
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=64, max_wait_s=0.005))
    v1 = loaded("1")
    await asyncio.gather(*(batcher.submit(v1, rows(i), "") for i in range(4)))
    assert [n for _, n, _ in score.calls] == [4]


async def later(turns: int, submit: Any) -> Any:
    """`submit()` after the event loop has run `turns` more turns."""
    for _ in range(turns):
        await asyncio.sleep(0)  # poll: one loop turn, not a timer (the test counts turns)
    return await submit()


async def test_a_lone_request_waits_for_nobody_but_a_busy_batch_waits_for_company() -> None:
    score = Doubler()
    # a long gap, so that "a few turns later" always falls inside it however slow the machine
    batcher = MicroBatcher(score, BatchPolicy(max_batch_size=64, min_gap_s=0.5, max_gap_s=0.5))
    v1 = loaded("1")
    # quiet: the first request is alone at the end of its turn, so it is scored at once and
    # a request three turns later makes a batch of its own
    await asyncio.gather(
        batcher.submit(v1, rows(1), "a"), later(3, lambda: batcher.submit(v1, rows(2), "b"))
    )
    assert [p for _, _, p in score.calls] == [[("a", 1)], [("b", 1)]]
    # busy: once a batch had company, a request alone for a few turns still waits for more
    await asyncio.gather(batcher.submit(v1, rows(3), "c"), batcher.submit(v1, rows(4), "d"))
    await asyncio.gather(
        batcher.submit(v1, rows(5), "e"), later(3, lambda: batcher.submit(v1, rows(6), "f"))
    )
    assert [p for _, _, p in score.calls[2:]] == [[("c", 1), ("d", 1)], [("e", 1), ("f", 1)]]
    # two single batches in a row (nobody else sends) make the batcher quiet again
    await batcher.submit(v1, rows(7), "g")
    await batcher.submit(v1, rows(8), "h")
    await asyncio.gather(
        batcher.submit(v1, rows(9), "i"), later(3, lambda: batcher.submit(v1, rows(10), "j"))
    )
    assert [p for _, _, p in score.calls[-2:]] == [[("i", 1)], [("j", 1)]]


class Sink:
    def __init__(self) -> None:
        self.logs: list[Any] = []

    async def __call__(self, model: str, version: str, ipc: bytes, rows: int) -> None:
        from driftloop.shared.records import ipc_to_table

        self.logs.append(ipc_to_table(ipc).to_pydict())


async def test_service_batches_real_pipeline_and_logs_one_record_per_batch() -> None:
    pipeline = make_pipeline()
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", pipeline, artifacts.signature(pipeline), "sha"))
    sink = Sink()
    logger = PredictionLogger(sink, new_id=lambda: "gen")
    service = InferenceService(slot, logger, batching=BatchPolicy(max_batch_size=64))

    def req(rid: str, n: int) -> codec.InferenceRequest:
        return codec.InferenceRequest(
            "m",
            "",
            rid,
            (
                codec.InputTensor("x1", "FP64", (n,), {"fp64_contents": [0.5] * n}),
                codec.InputTensor("color", "BYTES", (n,), {"bytes_contents": [b"red"] * n}),
                codec.InputTensor("x2", "FP64", (n,), {"fp64_contents": [1.0] * n}),
            ),
        )

    answers = await asyncio.gather(
        service.infer_async(req("a", 1)), service.infer_async(req("b", 2))
    )
    assert [a.outputs[0].shape for a in answers] == [(1,), (2,)]
    assert answers[0].outputs[0].data[0] == service.infer(req("c", 1)).outputs[0].data[0]
    assert logger.pending_rows == 4  # one batch record (3 rows) + the unbatched one
    await logger.flush()
    [table] = sink.logs
    assert table["_request_id"] == ["a", "b:0", "b:1", "c"]


def test_max_request_rows_is_refused_as_too_large_before_decoding() -> None:
    pipeline = make_pipeline()
    slot = ModelSlot()
    slot.swap(LoadedModel("m", "1", pipeline, artifacts.signature(pipeline), "sha"))
    service = InferenceService(slot, max_request_rows=10)
    big = codec.InferenceRequest("m", "", "", (codec.InputTensor("input-0", "FP64", (11, 3), {}),))
    with pytest.raises(TooLarge, match="at most 10 rows"):
        service.infer(big)


def test_numeric_matrix_fast_path_matches_the_column_path() -> None:
    request = codec.InferenceRequest(
        "m",
        "",
        "",
        (codec.InputTensor("input-0", "FP32", (2, 2), {"fp32_contents": [1, 2, 3, 4]}),),
    )
    fast = codec.decode_rows(request, SIG)
    assert fast.matrix is not None and fast.count == 2
    columns, count = codec.decode_columns(request, SIG)
    names = pd.Index(["a", "b"])
    mixed = codec.rows_frame([fast, codec.Rows(count, columns=columns)], names)
    assert mixed.to_dict("list") == {"a": [1.0, 3.0, 1.0, 3.0], "b": [2.0, 4.0, 2.0, 4.0]}
    inf = codec.InferenceRequest(
        "m",
        "",
        "",
        (codec.InputTensor("m", "FP64", (1, 2), {"fp64_contents": [1.0, float("inf")]}),),
    )
    with pytest.raises(InvalidInput, match="infinite"):
        codec.decode_rows(inf, SIG)


def test_bool_inputs_typed_and_raw_become_numbers() -> None:
    typed = codec.InferenceRequest(
        "m", "", "", (codec.InputTensor("t", "BOOL", (1, 2), {"bool_contents": [True, False]}),)
    )
    raw = codec.InferenceRequest(
        "m",
        "",
        "",
        (codec.InputTensor("t", "BOOL", (1, 2), {}),),
        raw_input_contents=(b"\x00\x01",),
    )
    assert codec.decode_frame(typed, SIG).to_dict("list") == {"a": [1.0], "b": [0.0]}
    assert codec.decode_frame(raw, SIG).to_dict("list") == {"a": [0.0], "b": [1.0]}

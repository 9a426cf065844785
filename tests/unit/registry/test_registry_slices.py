"""The no-regression-on-any-slice rule: candidate vs champion per slice on the same holdout,
tolerance and minimum slice size, and the rejection's recorded numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.services.registry.core.domain import (
    Candidate,
    Lineage,
    PromotionPolicy,
    SliceMetric,
    TrainingSpec,
)
from driftloop.services.registry.core.policy import decide
from driftloop.services.registry.core.registry import Registry
from driftloop.services.registry.core.store import RegistryStore

pytestmark = pytest.mark.unit
SHA = "cd" * 32
POLICY = PromotionPolicy(
    metric="accuracy", margin=0.01, floor=0.6, slice_tolerance=0.05, min_slice_rows=30
)


def sl(value: str, accuracy: float, rows: int = 100, column: str = "segment") -> SliceMetric:
    return SliceMetric(column, value, rows, {"accuracy": accuracy, "f1_macro": accuracy})


def test_no_slice_regression_promotes_and_says_how_many_slices() -> None:
    d = decide(
        POLICY,
        {"accuracy": 0.9},
        {"accuracy": 0.8},
        (sl("a", 0.9), sl("b", 0.88)),
        (sl("a", 0.8), sl("b", 0.9)),
    )
    assert d.promote
    assert d.reason.endswith("; no regression on 2 slices")


def test_regression_beyond_tolerance_on_one_slice_rejects_with_the_numbers() -> None:
    d = decide(
        POLICY,
        {"accuracy": 0.9},
        {"accuracy": 0.8},
        (sl("a", 0.95), sl("b", 0.70, rows=40), sl("c", 0.5, rows=10)),
        (sl("a", 0.8), sl("b", 0.80, rows=40), sl("c", 0.9, rows=10)),
    )
    assert not d.promote
    assert d.reason == (
        "slice segment=b: accuracy 0.700 < champion 0.800 - slice tolerance 0.050 "
        "on 40 holdout rows"
    )
    (worst,) = d.details["slice_regressions"]  # c is too small to count
    assert (worst["value"], worst["rows"], worst["candidate"], worst["champion"]) == (
        "b",
        40,
        0.70,
        0.80,
    )
    assert worst["drop"] == pytest.approx(0.1)
    assert d.details["slice_tolerance"] == 0.05


def test_drop_within_tolerance_and_unmatched_slices_pass() -> None:
    d = decide(
        POLICY,
        {"accuracy": 0.9},
        {"accuracy": 0.8},
        (sl("a", 0.76), sl("new", 0.1)),  # "new" has no champion score: nothing to compare
        (sl("a", 0.8),),
    )
    assert d.promote


def test_worst_slice_is_named_first_and_the_others_counted() -> None:
    d = decide(
        POLICY,
        {"accuracy": 0.9},
        {"accuracy": 0.8},
        (sl("a", 0.7), sl("b", 0.5)),
        (sl("a", 0.8), sl("b", 0.8)),
    )
    assert d.reason.startswith("slice segment=b:") and "(and 1 more slices)" in d.reason


def test_slices_do_not_matter_without_a_champion_or_when_the_margin_fails() -> None:
    assert decide(POLICY, {"accuracy": 0.9}, None, (sl("a", 0.1),), ()).promote
    d = decide(POLICY, {"accuracy": 0.8}, {"accuracy": 0.8}, (sl("a", 0.1),), (sl("a", 0.9),))
    assert not d.promote and "margin" in d.reason and d.details == {}


def candidate(
    run_id: str,
    champion: str,
    slices: tuple[SliceMetric, ...],
    champion_slices: tuple[SliceMetric, ...],
) -> Candidate:
    return Candidate(
        model="m",
        run_id=run_id,
        artifact_uri=f"artifacts/m/{run_id}/model.skops",
        artifact_sha256=SHA,
        profile_uri="",
        metrics={"accuracy": 0.9, "f1_macro": 0.9},
        champion_metrics={"accuracy": 0.8, "f1_macro": 0.8} if champion else {},
        champion_version=champion,
        lineage=Lineage(run_id=run_id, parent_version=champion, trigger="manual"),
        slice_metrics=slices,
        champion_slice_metrics=champion_slices,
    )


def test_registry_records_slices_and_the_rejection_evidence(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r.db")
    try:
        r = Registry(store)
        r.create_model("m", "d", "y", TrainingSpec(slice_columns=("segment",)))
        first = r.register(candidate("r1", "", (sl("a", 0.9),), ()))
        assert first.promoted
        assert r.get_version("m", "1").slice_metrics == (sl("a", 0.9),)
        second = r.register(candidate("r2", "1", (sl("a", 0.6),), (sl("a", 0.9),)))
        assert not second.promoted and second.version.status == "rejected"
        assert "slice segment=a" in second.decision_reason
        reject = [a for a in r.history("m", "2").audit if a.action == "reject"][0]
        assert reject.details["slice_regressions"][0]["candidate"] == 0.6
        register = [a for a in r.history("m", "2").audit if a.action == "register"][0]
        assert register.details["champion_slice_metrics"][0]["metrics"]["accuracy"] == 0.9
    finally:
        store.close()


def test_decisions_are_counted_by_model_and_action(tmp_path: Path) -> None:
    from driftloop.services.registry.core.metrics import DECISIONS

    def count(action: str) -> float:
        return DECISIONS.labels("m", action)._value.get()

    before = {a: count(a) for a in ("promoted", "rejected", "rolled_back")}
    store = RegistryStore(tmp_path / "r.db")
    try:
        r = Registry(store)
        r.create_model("m", "d", "y", TrainingSpec(slice_columns=("segment",)))
        r.register(candidate("r1", "", (sl("a", 0.9),), ()))
        r.register(candidate("r2", "1", (sl("a", 0.6),), (sl("a", 0.9),)))
        r.promote("m", "2", "override", actor="alice")
        r.rollback("m", "", "back")
    finally:
        store.close()
    assert count("promoted") - before["promoted"] == 2
    assert count("rejected") - before["rejected"] == 1
    assert count("rolled_back") - before["rolled_back"] == 1

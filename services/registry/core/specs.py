"""Training specs as YAML: strict parsing into a TrainingSpec, and checks of parameters and search
grids against the catalogue's constructors (those training fits), each error naming the field."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from driftloop.services.registry.core.domain import PromotionPolicy, SearchSpec, TrainingSpec
from driftloop.shared import estimators
from driftloop.shared.errors import InvalidInput, TooLarge

TOP_KEYS = (
    "dataset",
    "target",
    "features",
    "estimator",
    "params",
    "window_rows",
    "holdout_fraction",
    "min_rows",
    "policy",
    "slice_columns",
    "slice_column",
    "search",
    "schedule",
    "schedule_seconds",
    "task",
    "partition_by",
)
POLICY_KEYS = (
    "metric",
    "margin",
    "floor",
    "mode",
    "slice_tolerance",
    "min_slice_rows",
    "shadow_min_labels",
    "shadow_max_labels",
    "confidence",
    "min_improvement",
    "power",
    "max_attempts",
)
SEARCH_KEYS = ("param_grid", "cv", "max_candidates", "scoring")
MAX_CV = 10
MAX_SPEC_BYTES = 64 * 1024
"""A spec is a page of YAML; anything near this size is a mistake or an attack."""
MAX_LIST_ITEMS = 10_000
MAX_GRID_VALUES = 100
"""Values one search parameter may list: each is checked against scikit-learn's constraints."""
MAX_GRID_SIZE = 1_000_000
"""Combinations a full grid may hold, even when max_candidates samples a few of them: scikit-learn
indexes the grid with machine integers, so a 2^63-combination grid fails mid-run."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SCHEDULE = re.compile(
    r"^(?:every\s+)?(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)$"
)


@dataclass(frozen=True)
class ParsedSpec:
    spec: TrainingSpec
    dataset: str = ""
    target: str = ""


def parse_yaml(text: str) -> ParsedSpec:
    """A YAML training spec; InvalidInput names the field for unknown keys and bad types."""
    size = len(text.encode())
    if size > MAX_SPEC_BYTES:
        raise TooLarge(f"training spec is {size} bytes; the limit is {MAX_SPEC_BYTES}")
    try:
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text)):
            # why: aliases let a few bytes expand into billions of values once copied out
            raise InvalidInput("training spec: YAML anchors and aliases (*name) are not allowed")
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"training spec is not valid YAML: {exc}") from exc
    raw = _mapping("spec", raw or {}, TOP_KEYS)
    if "slice_column" in raw and "slice_columns" in raw:
        raise InvalidInput("spec: give slice_column or slice_columns, not both")
    slices = raw.get("slice_columns", raw.get("slice_column", []))
    policy = _mapping("policy", raw.get("policy") or {}, POLICY_KEYS)
    spec = TrainingSpec(
        features=tuple(_strings("features", raw.get("features", []))),
        estimator=_text("estimator", raw.get("estimator", "")),
        params={k: _param_json(f"params.{k}", v) for k, v in _params("params", raw).items()},
        window_rows=_int("window_rows", raw.get("window_rows", 0)),
        holdout_fraction=_float("holdout_fraction", raw.get("holdout_fraction", 0)),
        min_rows=_int("min_rows", raw.get("min_rows", 0)),
        policy=PromotionPolicy(
            metric=_text("policy.metric", policy.get("metric", "")),
            margin=_float("policy.margin", policy.get("margin", 0)),
            floor=_float("policy.floor", policy.get("floor", 0)),
            mode=_text("policy.mode", policy.get("mode", "")),
            slice_tolerance=_float("policy.slice_tolerance", policy.get("slice_tolerance", 0)),
            min_slice_rows=_int("policy.min_slice_rows", policy.get("min_slice_rows", 0)),
            shadow_min_labels=_int("policy.shadow_min_labels", policy.get("shadow_min_labels", 0)),
            shadow_max_labels=_int("policy.shadow_max_labels", policy.get("shadow_max_labels", 0)),
            confidence=_float("policy.confidence", policy.get("confidence", 0)),
            min_improvement=_float("policy.min_improvement", policy.get("min_improvement", 0)),
            power=_float("policy.power", policy.get("power", 0)),
            max_attempts=_int("policy.max_attempts", policy.get("max_attempts", 0)),
        ),
        slice_columns=tuple(_strings("slice_columns", slices)),
        search=_search(raw.get("search") or {}),
        schedule_seconds=schedule_seconds(raw.get("schedule", raw.get("schedule_seconds", 0))),
        task=_text("task", raw.get("task", "")),
        partition_by=tuple(_strings("partition_by", raw.get("partition_by", []))),
    )
    return ParsedSpec(
        spec, _text("dataset", raw.get("dataset", "")), _text("target", raw.get("target", ""))
    )


def schedule_seconds(value: Any) -> int:
    """`every 6h`, `30m`, `90s`, `1d`, a number of seconds, or off/none/0."""
    if value is None or value is False or value in ("off", "none", "never", ""):
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(
            f"spec field 'schedule': expected e.g. 'every 6h' or seconds, got {value!r}"
        )
    if isinstance(value, str):
        match = _SCHEDULE.match(value.strip().lower())
        if match is None:
            raise InvalidInput(
                f"spec field 'schedule': {value!r} is not a period; write e.g. 'every 6h', "
                "'30m', '90s', '1d' or a number of seconds"
            )
        value = float(match.group(1)) * _UNITS[match.group(2)[0]]
    if value < 0:
        raise InvalidInput(f"spec field 'schedule': {value} must not be negative")
    return int(value)


def _search(raw: Any) -> SearchSpec:
    search = _mapping("search", raw, SEARCH_KEYS)
    grid = _params("search.param_grid", search, "param_grid")
    return SearchSpec(
        param_grid={k: _grid_json(f"search.param_grid.{k}", v) for k, v in grid.items()},
        cv=_int("search.cv", search.get("cv", 0)),
        max_candidates=_int("search.max_candidates", search.get("max_candidates", 0)),
        scoring=_text("search.scoring", search.get("scoring", "")),
    )


def check_estimator(spec: TrainingSpec, max_candidates: int) -> None:
    """Parameters and search grid the estimator accepts, checked against the constructor
    training fits (the library's catalogue, for the spec's task); the search within
    `max_candidates`."""
    est = estimators.estimator(spec.estimator, task=spec.task)
    for name, value in spec.params.items():
        where = f"params.{name}"
        est.check(where, name, estimators.decode_param(where, value))
    search = spec.search
    if not search.param_grid:
        return
    grids = {
        name: json.loads(_grid_json(f"search.param_grid.{name}", values))
        for name, values in search.param_grid.items()
    }
    size = math.prod(len(grid) for grid in grids.values())  # exact: Python ints do not overflow
    if size > MAX_GRID_SIZE:
        raise TooLarge(
            f"spec field 'search.param_grid': {size} combinations; the limit is {MAX_GRID_SIZE} "
            "(even when search.max_candidates samples fewer)"
        )
    for name, grid in grids.items():
        for i, value in enumerate(grid):
            est.check(f"search.param_grid.{name}[{i}]", name, value)
    if not 2 <= search.cv <= MAX_CV:
        raise InvalidInput(f"spec field 'search.cv': {search.cv} folds; use 2 to {MAX_CV}")
    estimators.metric(search.scoring, "search.scoring", spec.task)
    if search.candidates() > max_candidates:
        raise InvalidInput(
            f"spec field 'search': {search.candidates()} parameter combinations exceed the "
            f"limit of {max_candidates} (DRIFTLOOP_REGISTRY_MAX_SEARCH_CANDIDATES); set "
            f"search.max_candidates to at most {max_candidates} to sample the grid"
        )


def _mapping(where: str, raw: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"spec field {where!r} must be a mapping, got {raw!r}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        prefix = "" if where == "spec" else f"{where}."
        raise InvalidInput(
            f"spec field {prefix + str(unknown[0])!r} is unknown; known keys: {list(allowed)}"
        )
    return raw


def _params(where: str, raw: dict[str, Any], key: str = "params") -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise InvalidInput(f"spec field {where!r} must be a mapping of name to value")
    return {str(k): v for k, v in value.items()}


def _param_json(where: str, value: Any) -> str:
    """A parameter as a JSON text; a string that is JSON already ("0.5") is taken as JSON."""
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return json.dumps(value)
    try:
        return json.dumps(value)
    except TypeError as exc:
        raise InvalidInput(f"spec field {where!r}: {value!r} is not a plain value") from exc


def _grid_json(where: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"spec field {where!r} must be a list of values") from exc
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"spec field {where!r} must be a non-empty list of values")
    if len(value) > MAX_GRID_VALUES:
        raise TooLarge(
            f"spec field {where!r} lists {len(value)} values; the limit is {MAX_GRID_VALUES}"
        )
    return json.dumps(value)


def _strings(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"spec field {where!r} must be a list of column names")
    if len(value) > MAX_LIST_ITEMS:
        raise TooLarge(
            f"spec field {where!r} lists {len(value)} columns; the limit is {MAX_LIST_ITEMS}"
        )
    return value


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"spec field {where!r} must be text, got {value!r}")
    return value


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"spec field {where!r} must be a whole number, got {value!r}")
    return value


def _float(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"spec field {where!r} must be a number, got {value!r}")
    return float(value)

"""The version's reference sample as check rows: the training values its reference profile
(shared/profile.py) keeps, in the model's feature order, for checking a compiled form on data.

Training stores the profile beside the artifact (artifacts/MODEL/RUN/profile.json next to
model.skops; the registry's profile_uri names the same key), so serving reads it from the object
store it fetched the artifact from, with no new input from the registry.
"""

from __future__ import annotations

import posixpath

import numpy as np

from driftloop.shared.artifacts import ModelSignature
from driftloop.shared.profile import ReferenceProfile

PROFILE_NAME = "profile.json"
"""The profile's name beside the artifact (training's executor writes both)."""
MAX_ROWS = 2000
"""Reference rows used at most: the profile's per-column sample size (shared/profile.py's
max_sample), so every sampled value is checked; a larger profile is cut (bounded deploy time)."""


def profile_key(artifact_key: str) -> str:
    """The key of the profile training stored beside the artifact at `artifact_key`."""
    return posixpath.join(posixpath.dirname(artifact_key), PROFILE_NAME)


def from_profile(data: bytes, signature: ModelSignature) -> np.ndarray:
    """The [N, F] float64 rows of the profile in `data`, column j the sampled training values
    of the signature's feature j; ValueError (saying why) when it cannot give them.

    The profile keeps each column's sample separately, so its columns are combined row-wise as
    they are: row i holds each column's i-th sampled value (the same training row when no column
    had missing values, since training samples every column with the same seed; otherwise a mix
    of real values). A column with fewer values than the longest repeats them, so every sampled
    value of every column appears; a column that had no values at all is NaN.
    """
    try:
        profile = ReferenceProfile.from_json(data)
    except Exception as exc:  # noqa: BLE001 - pydantic's and json's errors alike: not a profile
        raise ValueError(f"not a reference profile: {type(exc).__name__}: {exc}") from exc
    columns: list[list[float]] = []
    for feature in signature.features:
        found = profile.feature(feature.name)
        if found is None:
            raise ValueError(f"the profile has no column {feature.name!r}")
        if found.kind != "numeric":
            raise ValueError(f"the profile's column {feature.name!r} is {found.kind}, not numeric")
        columns.append(found.sample)
    rows = min(max((len(c) for c in columns), default=0), MAX_ROWS)
    if rows == 0:
        raise ValueError("the profile holds no sampled values")
    sample = np.full((rows, len(columns)), np.nan)
    for j, values in enumerate(columns):
        if values:
            sample[:, j] = np.resize(np.asarray(values[:rows], dtype=np.float64), rows)
    return sample

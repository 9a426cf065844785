"""What a model scores: a DataFrame, or, for a model with a numeric form, a plain float64 matrix
(no pandas on the request path). Built from decoded requests (codec.Rows), one or a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from driftloop.services.serving.core.codec import Rows


@dataclass(frozen=True)
class Matrix:
    """Rows of an all-numeric model without pandas: float64 [N, F], columns in `names` order."""

    values: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.values)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(self.names), copy=False)


Features = pd.DataFrame | Matrix
"""What a model scores: a DataFrame, or a Matrix when the model has a numeric form."""


def rows_matrix(parts: Sequence[Rows], names: tuple[str, ...]) -> Matrix | None:
    """Several requests' rows as one Matrix, in order; None unless every part is a matrix."""
    matrices = [p.matrix for p in parts if p.matrix is not None]
    if len(matrices) != len(parts):
        return None
    return Matrix(matrices[0] if len(matrices) == 1 else np.concatenate(matrices), names)

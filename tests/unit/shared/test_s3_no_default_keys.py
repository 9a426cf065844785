"""The S3 keys have no default: a service on the s3 object store refuses to start, naming the
variable, rather than talk to a store with a well-known key. (With both keys the store opens:
tests/integration/validation/test_validation_pipeline.py, against moto's S3 server.)"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from driftloop.shared.errors import InvalidInput
from driftloop.shared.s3 import open_object_store
from driftloop.shared.settings import CommonSettings, S3Settings

pytestmark = pytest.mark.unit


def test_no_key_is_refused_naming_both_variables() -> None:
    with pytest.raises(
        InvalidInput, match=r"DRIFTLOOP_S3__ACCESS_KEY and DRIFTLOOP_S3__SECRET_KEY are"
    ):
        open_object_store(CommonSettings(object_store="s3"))


def test_a_missing_secret_is_named_alone() -> None:
    s3 = S3Settings(access_key=SecretStr("id"))
    with pytest.raises(InvalidInput, match=r"but DRIFTLOOP_S3__SECRET_KEY is not set"):
        open_object_store(CommonSettings(object_store="s3", s3=s3))

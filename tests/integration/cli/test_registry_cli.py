"""The CLI's registry commands go through the one registry client against a real registry
server: a wrong token is a permission error that says what to fix (no traceback, no "registry
unavailable"), a stopped registry is UNAVAILABLE, and `versions --json` keeps its shape."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import Result
from pydantic import SecretStr
from registry_harness import registry_server
from support import stack_env
from typer.testing import CliRunner

from driftloop.shared.cli.app import app
from driftloop.shared.registry_client import RegistryClient
from driftloop.shared.registry_types import Candidate
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.integration
TOKEN = "cli-token-91be"


async def cli(common: CommonSettings, *args: str, token: str = TOKEN) -> Result:
    """`driftloop ARGS` in a thread (the CLI runs its own event loop)."""
    env = {**stack_env(common), "DRIFTLOOP_AUTH_TOKEN": token, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_registry_commands_map_errors_and_keep_their_output(common: CommonSettings) -> None:
    common = common.model_copy(update={"auth_token": SecretStr(TOKEN)})
    async with registry_server(common):
        create = ("model", "create", "churn", "--dataset", "d", "--target", "y")
        refused = await cli(common, *create, token="wrong")
        assert refused.exit_code == 1
        assert "UNAUTHENTICATED" in refused.output and "DRIFTLOOP_AUTH_TOKEN" in refused.output
        assert "Traceback" not in refused.output and "unavailable" not in refused.output.lower()

        created = await cli(common, *create)
        assert created.exit_code == 0, created.output
        assert "model churn on dataset d, target y" in created.output
        async with RegistryClient(common) as registry:
            key = "artifacts/churn/run-1/model.skops"
            await registry.register_version(
                Candidate("churn", "run-1", key, "ab" * 32, metrics={"accuracy": 0.9})
            )
        listed = await cli(common, "models")
        assert "churn: dataset=d production=1 latest=1" in listed.output

        # the in-process registry logs to the same stdout: the report is the last line
        printed = (await cli(common, "versions", "churn", "--json")).output
        report = json.loads(printed.strip().splitlines()[-1])
        [version] = report["versions"]
        assert (version["version"], version["status"]) == ("1", "production")
        [move] = report["alias_history"]
        assert (move["version"], move["actor"]) == ("1", "policy")
        assert "previous_version" not in move, "empty fields are left out, as before"
        assert move["at"].endswith("Z")

        missing = await cli(common, "approve", "churn", "7", "--reason", "why not")
        assert missing.exit_code == 1 and "NOT_FOUND" in missing.output

    down = await cli(common, "models")
    assert down.exit_code == 1 and "UNAVAILABLE" in down.output

"""Every YAML example in the README parses with the parser that reads it in real use, and every
`driftloop ...` command line in the README parses against the real command tree (names,
arguments, options and their types), so the docs cannot drift from the code again."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from driftloop.services.registry.core.domain import validate_spec, with_defaults
from driftloop.services.registry.core.specs import check_estimator, parse_yaml
from driftloop.shared.cli.app import app
from driftloop.shared.cli.commands.datasets import schema_from_yaml

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", README, re.S)]


def yaml_examples() -> list[str]:
    return [body for lang, body in BLOCKS if lang == "yaml"]


def test_the_readme_has_the_examples_this_test_reads() -> None:
    assert len(yaml_examples()) >= 3
    assert len(command_lines()) >= 40


@pytest.mark.parametrize("body", yaml_examples(), ids=lambda b: b.split("\n", 1)[0][:40])
def test_every_yaml_example_parses(body: str, tmp_path: Path) -> None:
    if body.lstrip().startswith("columns:"):
        path = tmp_path / "schema.yaml"
        path.write_text(body)
        schema = schema_from_yaml("people", path)
        assert len(schema.columns) == body.count("- {name:")
    else:
        # a training spec: unknown or misspelt fields raise, naming the field; then the
        # registry's own checks, as SetSpec runs them (defaults filled in, values in range,
        # estimator and parameters accepted for the spec's task)
        parsed = parse_yaml(body)
        spec = validate_spec(with_defaults(parsed.spec), parsed.target or "y")
        check_estimator(spec, 50)


def _logical_lines(body: str) -> list[str]:
    return body.replace("\\\n", " ").splitlines()


def _commands(line: str) -> list[list[str]]:
    """`driftloop` invocations on one line: after a `$ ` prompt, env assignments, or `;`."""
    found = []
    for part in line.removeprefix("$ ").split(";"):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]
        if words[:1] == ["driftloop"]:
            found.append(words[1:])
    return found


def _alternatives(words: list[str]) -> list[list[str]]:
    """`approve | reject MODEL` -> [approve MODEL], [reject MODEL]."""
    if "|" not in words:
        return [words]
    i = words.index("|")
    options, j = [words[i - 1]], i
    while j < len(words) and words[j] == "|":
        options.append(words[j + 1])
        j += 2
    return [
        variant
        for option in options
        for variant in _alternatives([*words[: i - 1], option, *words[j:]])
    ]


def command_lines() -> list[list[str]]:
    out = []
    for _lang, body in BLOCKS:
        for line in _logical_lines(body):
            for words in _commands(line):
                flat = [w for word in words for w in re.sub(r"[\[\]]", " ", word).split()]
                out += _alternatives(flat)
    return out


def _filled(words: list[str], tmp: Path) -> list[str]:
    """Placeholders -> values of the right kind (files that exist, numbers)."""
    files = {"FILE", "spec.yaml", "people.yaml", "schema.yaml"}
    tmp.joinpath("rows.csv").write_text("x\n1\n")
    values = {"N": "5", "DIR": str(tmp), "VERSION": "2", "MODEL:VERSION": "m:2", "...": "why"}
    return [str(tmp / "rows.csv") if w in files else values.get(w, w) for w in words]


def _parse(command: Any, args: list[str], name: str, parent: Any) -> Any:
    ctx = command.make_context(name, args, parent=parent)
    if isinstance(command, TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None
        return _parse(sub, sub_args, sub_name, ctx)
    return ctx


@pytest.mark.parametrize("words", command_lines(), ids=" ".join)
def test_every_readme_command_parses(words: list[str], tmp_path: Path) -> None:
    root = typer.main.get_command(app)
    try:
        _parse(root, _filled(words, tmp_path), "driftloop", None)
    except typer.Exit:
        pass  # --help: parsed, then exits
    except Exception as exc:  # noqa: BLE001 - typer vendors click: its UsageError is private
        pytest.fail(f"README command `driftloop {' '.join(words)}` does not parse: {exc!r}")

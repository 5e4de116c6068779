"""Specs from untrusted hands, applied through the SDK (no CLI pre-check) to a running
spec-registry: it runs none of their code, and refuses input past its limits with the field
and the reason before storing anything, then goes on serving the next apply."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from headwater.contracts.errors import InputError
from headwater.core.spec import parse_pipeline
from headwater.sdk.spec_files import read_document
from tests.e2e.conftest import RunningStack
from tests.fixtures.stack import stack_settings, started

pytestmark = pytest.mark.timeout(180)

MAX_DATASETS = 40
MAX_CODE_BYTES = 64 * 1024
BIG_DATASETS = 6  # seconds of parsing

GOOD_SPEC = """\
pipeline: good
sources:
  sales: {}
datasets:
  daily:
    sql: SELECT region, sum(amount) AS total FROM sales GROUP BY region
    inputs: {sales: identity}
"""


@pytest.fixture
async def stack(
    tmp_path: Path, namespace: str, nats_url: str, database: str
) -> AsyncIterator[RunningStack]:
    """The services as processes, spec-registry with low dataset and code limits."""
    env = {
        "HEADWATER_SPEC_MAX_DATASETS": str(MAX_DATASETS),
        "HEADWATER_SPEC_MAX_CODE_BYTES": str(MAX_CODE_BYTES),
    }
    settings = stack_settings(namespace, nats_url, database, None)
    async with started(tmp_path / "state", settings, env) as embedded:
        yield RunningStack(embedded, embedded.state_dir, "local")


def write(root: Path, spec: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    (root / "pipeline.yaml").write_text(spec)
    return root / "pipeline.yaml"


async def apply_rejected(stack: RunningStack, path: Path) -> InputError:
    async with stack.client() as hw:
        with pytest.raises(InputError) as info:
            await hw.apply(path)
    return info.value


async def apply_raw_rejected(stack: RunningStack, yaml_text: str) -> InputError:
    """Send a document as any NATS client could (the SDK reads YAML within bounds itself)."""
    doc = {"file": "pipeline.yaml", "yaml_text": yaml_text, "files": {}}
    async with stack.client() as hw:
        with pytest.raises(InputError) as info:
            await hw.call("spec-registry", "apply", doc)
    return info.value


async def assert_still_serving(
    stack: RunningStack, tmp_path: Path, refused: frozenset[str] = frozenset()
) -> None:
    """The same spec-registry process answers the next apply, and stored none of `refused`."""
    assert stack.stack.processes["spec-registry"].poll() is None
    async with stack.client() as hw:
        result = await hw.apply(write(tmp_path / "good", GOOD_SPEC))
        datasets = await hw.call("spec-registry", "datasets", {})
    assert {c["dataset"]: c["change"] for c in result["changes"]}["daily"] in ("added", "unchanged")
    assert {"sales", "daily"} <= set(datasets)
    assert not refused & set(datasets)


def python_spec(name: str) -> str:
    return (
        f"pipeline: {name}\nsources:\n  {name}_in: {{}}\ndatasets:\n  {name}:\n"
        f"    python: {name}.py:fn\n    inputs: {{{name}_in: identity}}\n"
    )


FN = "import os\nimport time\n\n\ndef fn(table):\n    return table\n\n\n"


async def test_spec_registry_runs_none_of_a_specs_python(
    stack: RunningStack, tmp_path: Path
) -> None:
    marker = tmp_path / "environ.txt"
    modules = {
        "interrupt": "raise KeyboardInterrupt\n",
        "environ": f"open({str(marker)!r}, 'w').write(repr(dict(os.environ)))\n",
        "sleep": "time.sleep(3600)\n",
        "cancel": "import asyncio\nraise asyncio.CancelledError\n",
    }
    for name, statement in modules.items():
        path = write(tmp_path / name, python_spec(name), {f"{name}.py": FN + statement})
        # The same function without the statement: what the code SHA must be, since the
        # module-level statement is neither reached by fn nor run.
        clean = write(tmp_path / f"{name}-clean", python_spec(name), {f"{name}.py": FN})
        expected = parse_pipeline(read_document(clean)).datasets[name].code_sha
        async with stack.client() as hw:
            result = await hw.apply(path)
        changes = {c["dataset"]: c for c in result["changes"]}
        assert changes[name]["change"] == "added", name
        assert changes[name]["code_sha"] == expected, name
        assert stack.stack.processes["spec-registry"].poll() is None, name
    assert not marker.exists()
    await assert_still_serving(stack, tmp_path)


def alias_bomb(levels: int = 9) -> str:
    """Sources whose descriptions (a field nothing else reads) nest aliases ten-fold: 10**9
    values once expanded, in under a kilobyte."""
    lines = ["pipeline: bomb", "sources:", "  s0: {description: &a0 [x, x, x, x, x, x, x, x, x]}"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"  s{i}: {{description: &a{i} [{refs}]}}")
    return "\n".join(lines) + "\n"


async def test_yaml_alias_bomb_and_deep_nesting_are_rejected(
    stack: RunningStack, tmp_path: Path
) -> None:
    spec = alias_bomb()
    assert len(spec) < 1024
    err = await apply_raw_rejected(stack, spec)
    assert err.field is not None
    assert err.field.startswith("sources.s4.description")
    assert "aliases expand it past 100000 values" in err.reason
    assert len(err.reason) < 400  # the error never shows the expanded value

    deep = "[" * 200 + "x" + "]" * 200
    err = await apply_raw_rejected(
        stack, f"pipeline: deep\nsources:\n  s: {{description: {deep}}}\n"
    )
    assert err.field is not None
    assert err.field.startswith("sources.s.description.0.0")
    assert "nests deeper than 32 levels" in err.reason
    await assert_still_serving(stack, tmp_path, frozenset({"s", "s0"}))


async def test_too_big_code_and_too_many_datasets_are_rejected(
    stack: RunningStack, tmp_path: Path
) -> None:
    select = "SELECT region, sum(amount) AS total FROM sales GROUP BY region"
    big_sql = "\nUNION ALL\n".join([select] * (MAX_CODE_BYTES // len(select) + 1))
    spec = (
        "pipeline: big\nsources:\n  sales: {}\ndatasets:\n"
        "  big:\n    sql: big.sql\n    inputs: {sales: identity}\n"
    )
    err = await apply_rejected(stack, write(tmp_path / "big", spec, {"big.sql": big_sql}))
    assert err.field == "sql"
    assert "'big'" in err.reason
    assert f"more than the {MAX_CODE_BYTES} allowed" in err.reason

    many = "".join(f"  s{i}: {{}}\n" for i in range(MAX_DATASETS + 1))
    err = await apply_rejected(stack, write(tmp_path / "many", f"pipeline: many\nsources:\n{many}"))
    assert err.field == "datasets"
    assert f"more than the {MAX_DATASETS} allowed" in err.reason
    await assert_still_serving(stack, tmp_path, frozenset({"big", "s0"}))


async def test_rollup_pattern_needing_backtracking_is_rejected(
    stack: RunningStack, tmp_path: Path
) -> None:
    cases = [
        (r"^(\w+)-\1$", "does not compile as RE2"),  # a backreference needs backtracking
        (r"^(?=(\d+))\1", "does not compile as RE2"),  # a lookahead too
        ("^(" + "a?" * 200 + ")", "at most 256"),
    ]
    for i, (pattern, reason) in enumerate(cases):
        spec = (
            "pipeline: rollup\nsources:\n  sales: {}\ndatasets:\n  by_key:\n"
            "    sql: SELECT count(*) AS n FROM sales\n"
            f"    inputs:\n      sales: {{mapping: rollup, pattern: '{pattern}'}}\n"
        )
        err = await apply_rejected(stack, write(tmp_path / f"rollup{i}", spec))
        assert err.field == "inputs.sales.pattern", pattern
        assert reason in err.reason, pattern
    await assert_still_serving(stack, tmp_path, frozenset({"by_key"}))


async def test_a_big_spec_being_parsed_does_not_hold_up_another_pipelines_apply(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Many datasets of SQL near the size limit: seconds of parsing in spec-registry.
    select = "SELECT region, sum(amount) AS total FROM sales WHERE amount > 0 GROUP BY region"
    sql = "\nUNION ALL\n".join([select] * (MAX_CODE_BYTES // (len(select) + 11)))
    body = "".join(
        f"  big{i}:\n    sql: big{i}.sql\n    inputs: {{sales: identity}}\n"
        for i in range(BIG_DATASETS)
    )
    big = write(
        tmp_path / "big",
        f"pipeline: big\nsources:\n  sales: {{}}\ndatasets:\n{body}",
        {f"big{i}.sql": sql for i in range(BIG_DATASETS)},
    )
    done: list[str] = []

    async def apply(path: Path, name: str) -> dict[str, Any]:
        async with stack.client() as hw:
            result: dict[str, Any] = await hw.call(
                "spec-registry", "apply", read_document(path).model_dump(), timeout=150
            )
        done.append(name)
        return result

    big_apply = asyncio.create_task(apply(big, "big"))
    await asyncio.sleep(0.5)  # the big document is with spec-registry
    small = write(
        tmp_path / "small",
        "pipeline: small\nsources:\n  other: {}\ndatasets:\n  other_daily:\n"
        "    sql: SELECT count(*) AS n FROM other\n    inputs: {other: identity}\n",
    )
    await apply(small, "small")
    await big_apply
    assert done == ["small", "big"]

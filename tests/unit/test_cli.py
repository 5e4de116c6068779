"""The CLI rejects a bad spec before it talks to any service, naming file, dataset and field."""

from pathlib import Path

from typer.testing import CliRunner

from headwater.sdk.cli import app


def test_plan_and_apply_reject_a_bad_spec_without_a_running_stack(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "pipeline: p\nsources:\n  s: {}\ndatasets:\n"
        "  d:\n    sql: SELECT * FROM nowhere\n    inputs: {s: identity}\n"
    )
    for command in ("plan", "apply"):
        result = CliRunner().invoke(app, [command, str(spec), "--state-dir", str(tmp_path)])
        assert result.exit_code == 2
        assert "pipeline.yaml: dataset 'd': sql: reads table 'nowhere'" in " ".join(
            result.output.split()
        )


def test_publish_without_a_file_says_what_is_missing(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["publish", "flights", "2013-01-01", "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "file: name the file to publish" in result.output


def test_a_spec_file_that_is_not_utf8_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "pipeline: p\nsources:\n  s: {}\ndatasets:\n"
        "  d:\n    sql: q.sql\n    inputs: {s: identity}\n"
    )
    (tmp_path / "q.sql").write_bytes("SELECT 'café' AS c FROM s\n".encode("latin-1"))
    for command in ("plan", "apply"):
        result = CliRunner().invoke(app, [command, str(spec), "--state-dir", str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)  # no traceback
        assert "pipeline.yaml: dataset 'd': sql: cannot read 'q.sql': it is not UTF-8" in (
            " ".join(result.output.split())
        )

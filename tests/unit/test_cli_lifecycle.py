from llmaas.cli.main import app
from typer.testing import CliRunner


def test_lifecycle_table_at_a_chosen_date():
    result = CliRunner().invoke(app, ["lifecycle", "--date", "2026-11-23", "--phase", "end_of_support"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "cogito:32b" in result.output and "gpt-oss:120b" in result.output
    assert "smollm2:135m" not in result.output  # in production, filtered out
    assert "21 models" in result.output


def test_lifecycle_rejects_a_bad_date():
    result = CliRunner().invoke(app, ["lifecycle", "--date", "soon"])
    assert result.exit_code == 2

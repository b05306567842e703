"""The benchmark harness runs end to end (on tiny settings; the real numbers are BENCHMARKS.md's)."""

from bench.run import main


def test_benchmark_harness_writes_the_table(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    assert (
        main(
            ["--repeats", "1", "--epochs", "1", "--synthetic-rows", "500", "--output", str(output)]
        )
        == 0
    )
    table = output.read_text()
    assert "| startup: `trainflow --help` |" in table
    assert "synthetic (500): cached second run" in table
    assert table.count("\n| ") >= 5

"""`make demo` runs xconv.demo; it must pass and print its evidence."""

from xconv import demo


def test_demo_runs_and_agrees(both_backends, capsys):
    assert demo.main(["--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "built from the spec with seed=0" in out and "hand-written nn.Sequential -> Keras" in out
    assert "bit-exact: True" in out
    assert "MISMATCH" not in out

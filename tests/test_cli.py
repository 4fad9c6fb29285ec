"""The command line (eventscaler/cli.py). Scenarios covered:
- --target-resync: 60 s by default, from AUTOSCALER_TARGET_RESYNC, the flag winning over it;
  0 allowed (read on every tick); a negative value or a word is an error naming the flag or the
  variable
- every `run` flag defaults from its environment variable, converted like the flag itself
"""

from __future__ import annotations

import pytest

from eventscaler.cli import RUN_FLAGS, parse_args

CONFIG = ["run", "--config", "rules.yaml"]


def test_target_resync_defaults_from_its_variable_and_the_flag_wins() -> None:
    assert parse_args(CONFIG, {}).target_resync == 60.0
    assert parse_args(CONFIG, {"AUTOSCALER_TARGET_RESYNC": "12.5"}).target_resync == 12.5
    assert parse_args([*CONFIG, "--target-resync", "0"], {}).target_resync == 0.0
    flag_wins = parse_args([*CONFIG, "--target-resync", "5"], {"AUTOSCALER_TARGET_RESYNC": "60"})
    assert flag_wins.target_resync == 5.0


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--target-resync", "-1"], {}, "--target-resync (AUTOSCALER_TARGET_RESYNC): expected at "
         "least 0, got -1"),
        ([], {"AUTOSCALER_TARGET_RESYNC": "-3"}, "expected at least 0, got -3"),
        ([], {"AUTOSCALER_TARGET_RESYNC": "soon"},
         "--target-resync: expected a number, got 'soon'"),
    ],
)  # fmt: skip
def test_a_bad_target_resync_is_an_error_naming_it(
    argv: list[str], environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args([*CONFIG, *argv], environ)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_every_run_flag_defaults_from_its_variable() -> None:
    values = {"str": "x", "bool": "true", "int": "3", "float": "2.5", "list": "a,b"}
    expected = {"str": "x", "bool": True, "int": 3, "float": 2.5, "list": ("a", "b")}
    for flag in RUN_FLAGS:
        if flag.choices:
            continue
        dest = flag.flag.lstrip("-").replace("-", "_")
        args = parse_args(
            ["run"] if flag.flag == "--config" else CONFIG, {flag.env: values[flag.kind]}
        )
        assert getattr(args, dest) == expected[flag.kind], flag.flag

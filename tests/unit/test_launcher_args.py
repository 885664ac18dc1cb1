"""counting-proxy's command line, in process: what it launches, what it prints, and a refusal
as one line naming the option.

tests/e2e/test_package.py runs the installed command; tests/e2e/test_run_script.py scripts/run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from counting_addon import __version__
from counting_addon.launcher.run import (
    SCRIPT,
    BadArguments,
    Launch,
    default_data_dir,
    main,
    parse_args,
)


@pytest.mark.parametrize(
    ("argv", "launch"),
    [
        (["http://u"], Launch("http://u", [])),
        (["--web", "http://u", "-p", "9"], Launch("http://u", ["-p", "9"], web=True)),
        (
            ["--redis-dir", "/d", "--web", "http://u", "--web"],
            Launch("http://u", ["--web"], web=True, data=Path("/d")),
        ),
        (["--redis-dir=/d", "http://u"], Launch("http://u", [], data=Path("/d"))),
    ],
)
def test_options_before_the_upstream_are_the_launchers_and_the_rest_go_to_mitmdump(
    argv: list[str], launch: Launch
) -> None:
    assert parse_args(argv, "counting-proxy") == launch


def test_version_and_addon_path_are_printed_and_exit_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--version"]) == 0
    assert main(["--addon-path"]) == 0
    assert capsys.readouterr().out == f"counting-addon {__version__}\n{SCRIPT}\n"
    assert SCRIPT.name == "addon.py" and SCRIPT.is_file()


@pytest.mark.parametrize("argv", [["--redis-dir"], ["--redis-dir", "--web", "u"], ["--redis-dir="]])
def test_a_redis_dir_without_a_directory_is_one_line_naming_the_option(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, "counting-proxy") == 2
    assert capsys.readouterr().err == "counting-proxy: --redis-dir needs a directory\n"


def test_an_unknown_option_before_the_upstream_is_named_above_the_usage() -> None:
    with pytest.raises(BadArguments) as refused:
        parse_args(["-p", "8080", "http://u"], "counting-proxy")
    first, *rest = str(refused.value).splitlines()
    assert first.startswith("counting-proxy: unknown option -p before UPSTREAM_URL")
    assert rest[0].startswith("usage: counting-proxy [--web] UPSTREAM_URL")


@pytest.mark.parametrize("argv", [[], ["--web"]])
def test_no_upstream_prints_the_usage_with_the_program_name(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, "python -m counting_addon") == 2
    assert capsys.readouterr().err.startswith("usage: python -m counting_addon [--web]")


def test_the_embedded_redis_data_defaults_to_the_users_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "counting-addon" / "redis"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "counting-addon" / "redis"

"""Every entry point answers ``--help`` with its options and at least one example."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from stream_harness.cli import COMMANDS, build_parser
from tests.support import REPO


def console_script() -> str:
    """The installed ``stream-harness`` (the venv's first: pytest may run without it on PATH)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("stream-harness", path=directory)
        if found:
            return found
    pytest.fail("the stream-harness console script is not installed: run `make install`")


def test_stream_harness_help_lists_every_command() -> None:
    done = subprocess.run([console_script(), "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name, _module in COMMANDS:
        assert f"\n    {name}" in done.stdout, name


def test_console_script_subcommand_help_shows_an_example() -> None:
    done = subprocess.run([console_script(), "run", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--seconds" in done.stdout
    assert "examples:\n  stream-harness run" in done.stdout


@pytest.mark.parametrize("name", [name for name, _module in COMMANDS])
def test_each_command_help_exits_0_with_options_and_an_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stream-harness {name}")
    assert "options:" in out
    examples = out[out.index("examples:") :].splitlines()[1:]
    assert any(line.strip().startswith(f"stream-harness {name}") for line in examples), out


def test_unknown_command_is_one_line_and_exit_2() -> None:
    done = subprocess.run([console_script(), "no-such-command"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

"""The `vln-gym` dispatcher: every command resolves to a real function; unknown commands exit 2."""

from __future__ import annotations

import importlib

import pytest

from agents.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_resolves_to_a_callable(command):
    module_name, function_name, _ = COMMANDS[command]
    assert callable(getattr(importlib.import_module(module_name), function_name))


def test_unknown_command_exits_2_and_lists_commands(capsys):
    assert main(["fly"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vln-gym: unknown command 'fly'")
    assert all(f"  {name} " in err for name in COMMANDS)


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")] == list(COMMANDS)


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vln-gym {version('vln-gym')}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_help_names_itself(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as stop:  # argparse / HfArgumentParser exit after printing help
        code = stop.code
    assert code in (0, None)
    assert capsys.readouterr().out.startswith(f"usage: vln-gym {command}")

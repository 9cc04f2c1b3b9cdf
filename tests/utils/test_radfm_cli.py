"""The ``radfm`` entry point's help: readable names, command groups list their commands."""

import pytest

from radfm.cli import main


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_subcommand_help_names_the_command_unquoted(capsys):
    text = _help(capsys, "score")
    assert "radfm score - Score prediction files" in text
    assert "radfm score <flags> [PREDICTIONS]..." in text
    assert "'radfm score'" not in text and "\"'\"" not in text


@pytest.mark.parametrize("group, commands", [("data", ["phantoms", "convert"]),
                                             ("rate", ["add_rater", "create", "export", "serve"])])
def test_group_help_lists_its_commands(capsys, group, commands):
    text = _help(capsys, group)
    assert f"radfm {group} COMMAND" in text
    assert all(f"\n     {command}\n" in text for command in commands)
    assert f"radfm {group} {commands[0]} - " in _help(capsys, group, commands[0])

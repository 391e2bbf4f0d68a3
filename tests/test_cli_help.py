"""Every command of the `viewerkit` CLI documents itself with an example."""

from __future__ import annotations

import click
from click.testing import CliRunner

from viewerkit.cli import main


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
    return found


def test_every_command_and_group_has_an_example_in_its_help() -> None:
    commands = _commands(main)
    assert {" ".join(p) for p, _ in commands} >= {
        "fetch", "refresh", "cache", "cache info", "report", "sandbox", "sandbox serve",
    }
    runner = CliRunner()
    missing = []
    for path, _ in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        example = result.output.split("Example:", 1)
        if len(example) < 2 or f"viewerkit {path[0]}" not in example[1]:
            missing.append(" ".join(path))
    assert missing == []

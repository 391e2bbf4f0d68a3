"""Every command of the `viewerkit` CLI documents itself with an example."""

from __future__ import annotations

import re

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
        example = re.split(r"Examples?:", result.output, maxsplit=1)
        if len(example) < 2 or f"viewerkit {path[0]}" not in example[1]:
            missing.append(" ".join(path))
    assert missing == []


def _example_lines(command: click.Command) -> list[str]:
    text = command.help or ""
    after = re.split(r"Examples?:", text, maxsplit=1)
    block = after[1].split("\n\n\n")[0] if len(after) == 2 else ""
    return [line.strip() for line in block.splitlines() if line.strip().startswith("viewerkit ")]


def test_every_example_shows_whole_on_an_80_column_terminal() -> None:
    """The help's examples are commands to copy: none may wrap in the middle (it broke a
    file name in `fetch --help`)."""
    runner = CliRunner()
    for path, command in _commands(main):
        lines = _example_lines(command)
        assert lines, path
        shown = runner.invoke(main, [*path, "--help"], terminal_width=80).output
        for line in lines:
            assert line in shown, (path, line)


def test_every_option_says_what_it_does() -> None:
    undocumented = [
        (" ".join(path), param.name)
        for path, command in _commands(main)
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert undocumented == []


def test_every_command_that_calls_the_api_takes_a_rate_limit_and_a_concurrency() -> None:
    import inspect

    calling = [(path, command) for path, command in _commands(main)
               if "_api_client(" in inspect.getsource(command.callback)]  # type: ignore[arg-type]
    assert len(calling) >= 10  # fetch, refresh, report, cache adopt, the bulk commands
    for path, _command in calling:
        shown = CliRunner().invoke(main, [*path, "--help"]).output
        assert "--rate-limit PER_SECOND" in shown and "requests per second" in shown, path
        if path != ("cache", "adopt"):  # it reads a few studies one at a time
            assert "--concurrency" in shown and "Requests in flight" in shown, path


def test_the_exit_statuses_are_listed_in_the_main_help_and_the_reports() -> None:
    from viewerkit.cli import EXIT_STATUSES

    bulk_only = {5, 6}  # rows failed / conflicts: only the `viewerkit bulk` commands end so
    for path in ((), ("report",)):
        shown = CliRunner().invoke(main, [*path, "--help"], terminal_width=120).output
        for code in EXIT_STATUSES:
            if path and code in bulk_only:
                continue
            assert re.search(rf"^\s+{code}\s+\S", shown, re.M), (path, code)

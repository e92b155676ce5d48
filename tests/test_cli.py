"""The root command: `instaseg --help` lists every area's commands without importing torch."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_commands_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from instaseg.cli import main\n"
        "rc = main(['--help'])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    for command in ("train", "evaluate", "predict", "models", "data", "export", "serve", "active"):
        assert f" {command} " in out, command
    assert out.strip().splitlines()[-1] == "NO-TORCH 0"


def _commands(group: object, path: str = "") -> list[tuple[str, object]]:
    sub = getattr(group, "commands", None)
    if not sub:
        return [(path, group)]
    return [c for name, cmd in sub.items() for c in _commands(cmd, f"{path} {name}".strip())]


def test_replace_existing_output_is_spelled_alike_everywhere() -> None:
    """Every command that can replace a user's file takes ``--overwrite``; ``--force`` is an alias."""
    import typer

    from instaseg.cli import _register_all, app

    _register_all()
    replacing = {}
    for path, cmd in _commands(typer.main.get_command(app)):
        for param in getattr(cmd, "params", []):
            if {"--force", "--overwrite"} & set(param.opts):
                replacing[path] = set(param.opts)
    expected = {"data pseudo-masks", "data convert", "predict", "active select", "active prelabel"}
    assert expected <= set(replacing)
    assert all(opts == {"--overwrite", "--force"} for opts in replacing.values()), replacing

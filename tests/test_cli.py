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

"""``instaseg serve`` and ``instaseg demo``: one shared option set, wired through to the app's limits."""

from __future__ import annotations

from typing import Any

import pytest
import typer
import uvicorn

from instaseg.cli import main
from instaseg.predict.predictor import Predictor
from instaseg.serve import commands
from tests.serve.fakes import CLASS_NAMES, BlobModel


def _options(name: str) -> list[str]:
    app = typer.Typer()
    commands.register(app)
    group = typer.main.get_command(app)
    return [opt for p in group.commands[name].params for opt in p.opts]


def test_serve_and_demo_take_the_same_options() -> None:
    assert _options("serve") == _options("demo")
    shared = {"--max-queue", "--max-upload-mb", "--max-megapixels", "--host", "--port", "--checkpoint"}
    assert shared <= set(_options("serve"))


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_limits_reach_the_app(command: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    started: list[Any] = []
    monkeypatch.setattr(commands, "_predictor", lambda *args, **kwargs: Predictor(BlobModel(), CLASS_NAMES))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    argv = [command, "--max-queue", "3", "--max-upload-mb", "2", "--max-megapixels", "1.5", "--port", "8123"]
    assert main(argv) == 0
    (app, kw), = started
    limits = app.state.limits
    assert (limits.max_queue, limits.max_upload_bytes, limits.max_pixels) == (3, 2 * 1024 * 1024, 1_500_000)
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    assert ("demo at" if command == "demo" else "serving on") in capsys.readouterr().out


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_negative_max_queue_is_a_one_line_error(command: str, capsys) -> None:
    assert main([command, "--max-queue", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "instaseg: error: --max-queue must be >= 0, got -1"

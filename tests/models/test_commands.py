"""`instaseg models` lists every registered model with a description and a parameter count."""

from __future__ import annotations

import json

import pytest

from instaseg.cli import main
from instaseg.models import get_model, list_models


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--no-params"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert all(len(line.split()) > 3 for line in lines)  # every model has a description


def test_models_json_counts_parameters(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    # Count only the small models to keep this fast; the JSON shape is what matters.
    import instaseg.models.registry as registry

    small = ["maskrcnn_r18_slim", "simple_fpn"]
    monkeypatch.setattr(registry, "list_models", lambda: small)
    assert main(["models", "--json", "--num-classes", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == small
    r18 = rows[0]
    assert r18["description"].startswith("The CPU default")
    expected = sum(p.numel() for p in get_model("maskrcnn_r18_slim", num_classes=3).parameters())
    assert r18["params"] == expected and 1_000_000 < expected < 10_000_000

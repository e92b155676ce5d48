"""CLI commands of instaseg.models (registered by :func:`register`)."""

from __future__ import annotations

import typer


def model_table(*, count_params: bool = True, num_classes: int | None = None) -> list[dict]:
    """One row per registered model: name, one-line description and parameter count (builder
    defaults, or ``num_classes`` when given; None when not counted)."""
    from instaseg.models.registry import get_model_builder, list_models

    rows = []
    for name in list_models():
        builder = get_model_builder(name)
        doc = (builder.__doc__ or "").strip().splitlines()
        row = {"name": name, "description": doc[0].strip() if doc else "", "params": None}
        if count_params:
            kwargs = {} if num_classes is None else {"num_classes": num_classes}
            model = builder(**kwargs)
            row["params"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""

    @app.command("models")
    def models_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
        params: bool = typer.Option(
            True, "--params/--no-params", help="Build each model to count parameters."
        ),
        num_classes: int = typer.Option(None, "--num-classes", help="Count parameters for this many classes "
                                        "(with background); default: each builder's default."),
    ) -> None:
        """List the registered models with a one-line description and parameter count."""
        import json

        rows = model_table(count_params=params, num_classes=num_classes)
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            count = f"{r['params'] / 1e6:6.1f}M" if r["params"] is not None else "      -"
            typer.echo(f"{r['name']:<{width}}  {count}  {r['description']}")

"""Learning curves of ``bench_active.py``: mask AP against labelled images per selection strategy, every
seed stored (thin lines) and their mean (thick), plus a Markdown table.

Usage: python benchmarks/plot_active.py active_pennfudan [active_nuclei ...]
Reads and writes benchmarks/results/NAME.json -> NAME.png (and prints the table).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results"
COLOURS = {"random": "tab:gray", "active": "tab:blue", "uncertainty": "tab:orange", "rich": "tab:green"}


def curves(data: dict) -> dict[str, dict[int, list[float]]]:
    """``{strategy: {labelled images: [mask AP of each seed]}}`` from a bench_active results dict."""
    out: dict[str, dict[int, list[float]]] = {}
    for key, rounds in data["curves"].items():
        strategy = key.split("_seed")[0]
        for r in rounds:
            if r.get("mask_AP") is not None:
                out.setdefault(strategy, {}).setdefault(int(r["labelled"]), []).append(float(r["mask_AP"]))
    return out


def images_to_reach(curve: dict[int, float], target: float) -> int | None:
    """Fewest labelled images at which ``curve`` (``{images: mask AP}``) reaches ``target``; None if never."""
    return next((n for n in sorted(curve) if curve[n] >= target), None)


def target_lines(by: dict[str, dict[int, list[float]]], baseline: str = "random") -> list[str]:
    """The issue's test on the seed means: the images each strategy needs to reach the AP ``baseline``
    has at its largest size (the target asks for <= 70% of that size)."""
    if baseline not in by:
        return []
    means = {s: {n: sum(v) / len(v) for n, v in pts.items()} for s, pts in by.items()}
    top = max(means[baseline])
    goal = means[baseline][top]
    lines = [f"{baseline} at {top} images: {goal:.3f} (target: reach it with <= {int(0.7 * top)})"]
    for strategy, curve in means.items():
        if strategy != baseline:
            n = images_to_reach(curve, goal)
            lines.append(f"{strategy}: " + (f"reaches it at {n} images" if n else "never reaches it"))
    return lines


def main() -> None:
    for name in sys.argv[1:]:
        data = json.loads((RESULTS / f"{name}.json").read_text())
        by = curves(data)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key, rounds in data["curves"].items():
            strategy = key.split("_seed")[0]
            pts = [(r["labelled"], r["mask_AP"]) for r in rounds if r.get("mask_AP") is not None]
            ax.plot(*zip(*pts, strict=True), color=COLOURS.get(strategy), lw=0.8, alpha=0.5)
        print(f"\n{name}: mask AP (mean over seeds; seeds)\n\n| images | " + " | ".join(by) + " |")
        print("| --- |" + " --- |" * len(by))
        sizes = sorted({n for s in by.values() for n in s})
        for n in sizes:
            cells = []
            for strategy in by:
                aps = by[strategy].get(n, [])
                cells.append(f"{sum(aps) / len(aps):.3f} ({len(aps)})" if aps else "")
            print(f"| {n} | " + " | ".join(cells) + " |")
        print("\n" + "\n".join(target_lines(by)))
        for strategy, pts in by.items():
            xs = sorted(pts)
            ax.plot(xs, [sum(pts[x]) / len(pts[x]) for x in xs], color=COLOURS.get(strategy), lw=2,
                    label=f"{strategy} (mean of {max(len(v) for v in pts.values())} seeds)")
        ax.set_xlabel("labelled images")
        ax.set_ylabel("val mask AP")
        ax.set_title(f"{data.get('dataset', name)}: selection strategies")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{name}.png", dpi=110)
        print(f"wrote {RESULTS / f'{name}.png'}")


if __name__ == "__main__":
    main()

"""Error against budget on the validation split (issue 16, item 2): r2d2, supervised and
FixMatch at 4000 labels, seed 0, in two series of bench folders (each has the command that made
it in ``COMMAND``): ``budget_<iterations>/``, r2d2 with the reference's loss for the labeled
samples (lrs 0.15 -> 0.005), and ``budget_ce_<iterations>/``, r2d2 with the chosen 4000-label
setting (``r2d2_labeled_loss: ce``, lrs 0.05 -> 0.0017), each series with its own supervised
and FixMatch runs. Writes ``budget.md`` and ``budget.png`` here. Usage, from the repository
root: python results/fashionmnist_val/budget.py

A budget is given in iterations and in epochs of the unlabeled set: 48 unlabeled rows a step
over the 14,000 rows of ``make_npz.py``'s 4000-label file (10,000-image pool + the labeled set).
"""
import glob
import os
import re
from typing import Dict

from r2d2_plugin.tools.common import final_errors, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
ALGORITHMS = ("supervised", "fixmatch", "r2d2")
UNLABELED_PER_STEP, UNLABELED_ROWS = 48, 14000
SERIES = {"": "r2d2 with the reference's labeled loss, lrs 0.15 → 0.005",
          "ce_": "r2d2 with `r2d2_labeled_loss: ce`, lrs 0.05 → 0.0017 (the chosen setting)"}


def read(prefix: str) -> Dict[int, Dict[str, float]]:
    """{iterations: {algorithm: error %}} of every finished run in the ``budget_<prefix>*`` folders."""
    table: Dict[int, Dict[str, float]] = {}
    for folder in glob.glob(os.path.join(HERE, f"budget_{prefix}*")):
        match = re.search(rf"budget_{prefix}(\d+)$", folder)
        if match:
            errors = final_errors(os.path.join(folder, "runs.csv"))
            table[int(match.group(1))] = {algorithm: error for (algorithm, _, _), error in errors.items()}
    return dict(sorted(table.items()))


def epochs(iterations: int) -> float:
    return iterations * UNLABELED_PER_STEP / UNLABELED_ROWS


def markdown(table: Dict[int, Dict[str, float]], title: str) -> str:
    lines = [f"### {title}", "",
             "| iterations | epochs of the unlabeled set | " + " | ".join(ALGORITHMS)
             + " | r2d2 − supervised |", "|---" * (len(ALGORITHMS) + 3) + "|"]
    for iterations, errors in table.items():
        cells = [f"{errors[a]:.2f}" if a in errors else "—" for a in ALGORITHMS]
        gap = (f"{errors['r2d2'] - errors['supervised']:+.2f}"
               if "r2d2" in errors and "supervised" in errors else "—")
        lines.append(f"| {iterations} | {epochs(iterations):.1f} | " + " | ".join(cells) + f" | {gap} |")
    return "\n".join(lines) + "\n"


def plot(tables: Dict[str, Dict[int, Dict[str, float]]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4), sharey=True)
    for ax, (prefix, table) in zip(axes, tables.items()):
        for algorithm in ALGORITHMS:
            points = [(epochs(it), e[algorithm]) for it, e in table.items() if algorithm in e]
            if points:
                ax.plot(*zip(*points), marker="o", label=algorithm)
        ax.set_xscale("log")
        ax.set_xticks([epochs(it) for it in table], [f"{epochs(it):.1f}\n({it} it.)" for it in table])
        ax.minorticks_off()
        ax.set_xlabel("budget, epochs of the 14k unlabeled rows (log)")
        ax.set_title(SERIES[prefix].replace("`", ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("validation error % (seed 0)")
    fig.suptitle("Fashion-MNIST, 4000 labels, validation split")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    tables = {prefix: read(prefix) for prefix in SERIES}
    text = ("Validation error % at 4000 labels, seed 0 (one seed: no std), by budget. Made by "
            "`python results/fashionmnist_val/budget.py`.\n\n"
            + "\n".join(markdown(table, SERIES[prefix]) for prefix, table in tables.items()))
    plot(tables, os.path.join(HERE, "budget.png"))
    write_report(os.path.join(HERE, "budget.md"), text)


if __name__ == "__main__":
    main()

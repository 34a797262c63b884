"""Issue 16's accuracy bars on six seeds: the head-to-head's seeds 0-2 (``../fashionmnist/runs.csv``)
and seeds 3-5 run here with the same configs and code path (``4000/``, ``250/``, ``40/``: each
folder's ``COMMAND``). Each bar is written at every label count as a per-seed margin (at or under 0:
met), averaged over seeds; the goal itself is judged on seeds 0-2 (``../fashionmnist/goal.md``).
Writes ``six_seeds.md`` here.
Usage, from the repository root: python results/fashionmnist_seeds345/six_seeds.py
"""
import os
from typing import Callable, Dict, List, Optional, Tuple

from r2d2_plugin.tools.common import STD_NOTE, final_errors, mean_pm_std, write_report

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = {(0, 1, 2): os.path.join(HERE, "..", "fashionmnist", "runs.csv"),
           (3, 4, 5): os.path.join(HERE, "{num_labels}", "runs.csv")}
Errors = Dict[str, float]
LABELS = (4000, 250, 40)
# (bar, margin of one seed's errors: at or under 0 where the bar is met)
BARS: List[Tuple[str, Callable[[Errors], float]]] = [
    ("r2d2 ≤ pseudolabel", lambda e: e["r2d2"] - e["pseudolabel"]),
    ("r2d2 ≤ supervised − ½ (supervised − fixmatch)",
     lambda e: e["r2d2"] - (e["supervised"] + e["fixmatch"]) / 2),
    ("r2d2_strong ≤ fixmatch", lambda e: e["r2d2_strong"] - e["fixmatch"]),
    ("r2d2 ≤ supervised (not a bar)", lambda e: e["r2d2"] - e["supervised"]),
]


def errors(num_labels: int) -> Dict[int, Errors]:
    """Seed -> algorithm -> final test error % at ``num_labels``."""
    table: Dict[int, Errors] = {}
    for seeds, path in SOURCES.items():
        for (algorithm, labels, seed), error in final_errors(path.format(num_labels=num_labels)).items():
            if labels == num_labels and seed in seeds:
                table.setdefault(seed, {})[algorithm] = error
    return table


def margin(bar: Callable[[Errors], float], errs: Errors) -> Optional[float]:
    try:
        return bar(errs)
    except KeyError:
        return None


def markdown() -> str:
    lines = ["Issue 16's accuracy bars as per-seed margins (test error %, points; at or under 0: met), "
             f"{STD_NOTE}. Seeds 0-2: the head-to-head (`../fashionmnist`), seeds 3-5: this folder. Made by "
             "`python results/fashionmnist_seeds345/six_seeds.py`.", "",
             "| labels | bar | margin per seed (0-5) | seeds 0-2 | seeds 3-5 | **seeds 0-5** | ≤ 0 on |",
             "|---|---|---|---|---|---|---|"]
    for name, bar in BARS:
        for num_labels in LABELS:
            table = errors(num_labels)
            by_seed = {s: m for s in sorted(table) if (m := margin(bar, table[s])) is not None}
            if not by_seed:
                continue
            groups = [[m for s, m in by_seed.items() if s in seeds] for seeds in SOURCES]
            cells = [mean_pm_std(g) if g else "—" for g in groups]
            met = sum(m <= 0 for m in by_seed.values())
            lines.append(f"| {num_labels} | {name} | {' / '.join(f'{m:+.2f}' for m in by_seed.values())} | "
                         f"{cells[0]} | {cells[1]} | **{mean_pm_std(list(by_seed.values()))}** | "
                         f"{met} of {len(by_seed)} seeds |")
    lines += ["", "Test error % of the algorithms run on seeds 3-5:", "",
              "| labels | algorithm | seeds 0-2 | seeds 3-5 | **seeds 0-5** |", "|---|---|---|---|---|"]
    for num_labels in LABELS:
        table = errors(num_labels)
        for algorithm in sorted({a for s, errs in table.items() if s in (3, 4, 5) for a in errs}):
            by_seed = {s: errs[algorithm] for s, errs in table.items() if algorithm in errs}
            groups = [[e for s, e in by_seed.items() if s in seeds] for seeds in SOURCES]
            cells = [mean_pm_std(g) if g else "—" for g in groups]
            lines.append(f"| {num_labels} | {algorithm} | {cells[0]} | {cells[1]} | "
                         f"**{mean_pm_std(list(by_seed.values()))}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    write_report(os.path.join(HERE, "six_seeds.md"), markdown())

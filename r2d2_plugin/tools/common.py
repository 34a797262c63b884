"""What the experiment tools share: CSV rows, the COMMAND file, the spawned run pool, and the
one std convention of every table (sample std, n - 1)."""
from __future__ import annotations

import csv
import multiprocessing
import os
import shlex
import sys
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError

STD_NOTE = "mean ± sample std (n − 1) over seeds"


def read_rows(path: str) -> List[Dict[str, str]]:
    """The rows of a CSV file written by ``write_rows`` (none if it does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_errors(path: str) -> Dict[Tuple[str, int, int], float]:
    """(algorithm, num_labels, seed) -> final error % of every finished run in the ``runs.csv`` at ``path``."""
    return {(r["algorithm"], int(r["num_labels"]), int(r["seed"])): float(r["error_pct"]) for r in read_rows(path)}


def write_rows(path: str, fields: Sequence[str], rows: Sequence[Dict[str, Any]]) -> None:
    """``rows`` as a CSV file with the columns ``fields``."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_command(out: str, module: str, argv: Sequence[str], name: str = "COMMAND",
                  prefix: str = "", launcher: str = "python") -> None:
    """``out/name``: the command line that regenerates ``out``:
    ``prefix launcher -m module argv`` (``prefix``: environment settings)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as f:
        f.write(f"{prefix}{launcher} -m {module} {shlex.join(argv)}\n")


def read_command(out: str, module: str, name: str = "COMMAND") -> Optional[List[str]]:
    """The arguments after ``-m module`` in ``out/name`` as ``write_command`` wrote them (None if
    there is no such file or it runs another module)."""
    path = os.path.join(out, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        tokens = shlex.split(f.read())
    return tokens[tokens.index(module) + 1:] if module in tokens else None


def write_report(path: str, text: str) -> None:
    """Write a report (a table in markdown) to ``path`` and print it."""
    with open(path, "w") as f:
        f.write(text)
    print(text)


def join_sections(intro: str, sections: Iterable[List[str]]) -> str:
    """A markdown report: ``intro``, then each section's lines after a blank line."""
    lines = [intro]
    for section in sections:
        lines += [""] + section
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def mean_pm_std(values: Sequence[float]) -> str:
    """``mean ± std``; only the value for a single seed (it has no sample std)."""
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def spawned_runs(jobs: int, function: Callable, tasks: Sequence[Tuple]) -> Iterator[Tuple[Tuple, Any]]:
    """``function(*task)`` for every task, each in a fresh spawned process, ``jobs`` at a time;
    yields (task, result) as they finish."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures: Dict[Future, Tuple] = {pool.submit(function, *task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_tool(main: Callable[[], None]) -> None:
    """A tool's ``main`` from the command line: a ``ConfigError`` ends it as the launcher does
    (``error: <problem>. Fix: <fix>.``), without a traceback."""
    try:
        main()
    except ConfigError as err:
        sys.exit(f"error: {err}")

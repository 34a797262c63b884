"""How far lazy R2 and the full pass drift apart in integration_tests/test_fashionmnist.py's
40-iteration runs when the CPU rounds differently: the test's runs (full pass, lazy, and a full
pass 16 rows at a time as a control) under several instruction sets and thread counts, max |diff|
of the filled store rows and of the weights (model, EMA). Writes lazy_fill.jsonl and lazy_fill.md.

    python results/test_margins/lazy_fill.py        # from the repository root, about 4 minutes
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Instruction sets as a CPU without AVX-512 (or without AVX) would run torch's, MKL's and oneDNN's kernels.
ISAS = {
    "native": {},
    "MKL AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "all AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "all SSE4": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
CASES = ("array", "per image (Resize to 24)")


def one(case: str, threads: int, out: Path) -> dict:
    """The three runs in this process; their largest differences."""
    import torch
    from torchvision import transforms

    sys.path.insert(0, str(ROOT / "integration_tests"))
    from conftest import build_alg
    from test_fashionmnist import fashion_argv, write_fixture

    write_fixture(out / "data", gz=True)
    runs = {}
    for key, extra in {"full": ["--r2d2_lazy_repredict", "False"], "lazy": ["--r2d2_lazy_repredict", "True"],
                       "full16": ["--r2d2_lazy_repredict", "False", "--eval_batch_size", "16"]}.items():
        torch.set_num_threads(threads)
        alg, _ = build_alg(fashion_argv(out / key, out / "data", "r2d2", *extra))
        if case != "array":
            dset = alg.dataset_dict["eval"]
            dset.transform = transforms.Compose([transforms.Resize(24), *dset.transform.transforms])
        alg.train()
        runs[key] = alg
    filled = runs["lazy"].repredictor.filled()

    def diff(a: str, b: str) -> list:
        store = (runs[a].store.logits[filled] - runs[b].store.logits[filled]).abs().max().item()
        weights = max((getattr(runs[a], m).state_dict()[n] - v).abs().max().item()
                      for m in ("model", "ema_model") for n, v in getattr(runs[b], m).state_dict().items()
                      if v.is_floating_point())
        return [store, weights]

    return {"lazy_vs_full": diff("lazy", "full"), "full16_vs_full": diff("full16", "full")}


def main() -> None:
    if len(sys.argv) == 4:  # a worker: case, threads, folder
        print(json.dumps(one(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))))
        return
    rows = []
    for isa, env in ISAS.items():
        for case in CASES:
            for threads in (1, 2):
                with tempfile.TemporaryDirectory() as tmp:
                    done = subprocess.run([sys.executable, __file__, case, str(threads), tmp], check=True,
                                          capture_output=True, text=True, cwd=ROOT,
                                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
                rows.append({"isa": isa, "case": case, "threads": threads,
                             **json.loads(done.stdout.strip().splitlines()[-1])})
                print(rows[-1], flush=True)
    (HERE / "lazy_fill.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = ["# Lazy R2 against the full pass, under other CPUs' rounding", "",
             "Made by `python results/test_margins/lazy_fill.py` (its docstring says what it runs). Max |difference| after the "
             "40-iteration runs of `test_lazy_repredictions_train_as_the_full_pass`; the control is "
             "the full pass with 16 rows a batch instead of 128.", "",
             "| instruction sets | case | threads | lazy − full: store | weights | control: store | weights |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['isa']} | {r['case']} | {r['threads']} | {r['lazy_vs_full'][0]:.2g} | "
                     f"{r['lazy_vs_full'][1]:.2g} | {r['full16_vs_full'][0]:.2g} | {r['full16_vs_full'][1]:.2g} |")
    worst = max(max(r["lazy_vs_full"]) for r in rows)
    lines += ["", f"Largest lazy − full difference: {worst:.2g}; the test allows 0.05 for the whole run. "
              "The control shows that batching alone moves these runs as much (or, on some lines, not "
              "at all while lazy moves), so no fixed ratio to it bounds the drift: the test checks the "
              "filled rows against the frozen net's own pass at 1e-5 instead, and the run at 0.05."]
    (HERE / "lazy_fill.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

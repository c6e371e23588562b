"""Tables of the ProMoT miniature from results.json (markdown, printed and put in README)."""
from __future__ import annotations

from typing import Mapping, Sequence

LABELS = {"promot": "ProMoT", "finetune": "fine-tuning", "prompt_tuning": "prompt tuning"}


def _f(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _short(task: str) -> str:
    return task.replace("mini_icl_", "").replace("mini_", "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _after_first_task(run: Sequence[Mapping]) -> Mapping:
    """The measurement once the first task is complete (all its stages)."""
    first = run[1]["after"].split("_")[0] if len(run) > 1 else None
    done = [m for m in run if m["after"].split("_")[0] == first]
    return done[-1]


def table3(results: Mapping) -> str:
    """Target-task score and held-out few-shot scores after the FIRST task (Table 3)."""
    runs = results["runs"]
    any_run = next(iter(runs.values()))
    initial = any_run[0]
    families = list(initial["heldout"])
    first = _after_first_task(any_run)
    target = list(first["seen"])[0]
    header = ["model", f"{_short(target)} (target)"] + [_short(f) for f in families] + \
        ["Norm. Avg. (held-out, no prompt)"]
    rows = [["pretrained", "-"] + [_f(initial["heldout"][f]) for f in families] +
            [_f(initial["norm_avg"])]]
    for method, run in runs.items():
        m = _after_first_task(run)
        rows.append([LABELS.get(method, method), _f(m["seen"][target])] +
                     [_f(m["heldout"][f]) for f in families] + [_f(m["norm_avg"])])
        if method == "promot":  # its stage 1 alone is prompt tuning on the target
            s1 = next(r for r in run if r["after"].endswith("_prompt"))
            rows.append(["ProMoT stage 1 only", _f(s1["seen"][target])] +
                        [_f(s1["heldout"][f]) for f in families] + [_f(s1["norm_avg"])])
    return _table(header, rows)


def sequential_table(results: Mapping) -> str:
    """Per method and measurement: each seen task's score (own prompt) and Norm. Avg."""
    tasks = []
    for run in results["runs"].values():
        for m in run:
            tasks += [t for t in m["seen"] if t not in tasks]
    header = ["method", "after stage"] + [_short(t) for t in tasks] + ["held-out Norm. Avg."]
    rows = []
    for method, run in results["runs"].items():
        for m in run:
            rows.append([LABELS.get(method, method), m["after"]] +
                        [_f(m["seen"].get(t)) for t in tasks] + [_f(m["norm_avg"])])
    return _table(header, rows)


def render(results: Mapping) -> str:
    return ("Table 3 in miniature (after the first target task)\n\n" + table3(results) +
            "\n\nSequential runs (scores after every stage)\n\n" + sequential_table(results))

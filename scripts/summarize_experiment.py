#!/usr/bin/env python3
"""Summarises `lora-null experiment` results (results.jsonl + baseline.json) per method: the
mean over seeds and, where a method ran with several seeds, the range. Standard library only.

    python3 scripts/summarize_experiment.py experiments/forgetting
"""
import json
import sys
from collections import OrderedDict

out = sys.argv[1] if len(sys.argv) > 1 else "experiments/forgetting"
base = json.load(open(f"{out}/baseline.json"))
runs = [json.loads(l) for l in open(f"{out}/results.jsonl") if l.strip()]
by = OrderedDict()
for r in runs:
    by.setdefault(r["method"], []).append(r)


def cell(vals, fmt, scale=1.0):
    vals = [v * scale for v in vals]
    mean = round(sum(vals) / len(vals), 9) + 0.0
    if len(vals) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(min(vals))}, {fmt.format(max(vals))}]"


print("| method | seeds | task exact % | task fields % | probe contains % (base "
      f"{100 * base['probe_contains']:.1f}) | Δ probe contains (pts) | prose ppl (base {base['prose_ppl']:.3f}) "
      "| Δ prose ppl | ΔW disturbance | ΔW share in top-r |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m, rs in by.items():
    g = lambda k: [r["after"][k] for r in rs]
    print(f"| {m} | {len(rs)} | {cell(g('task_exact'), '{:.1f}', 100)} | {cell(g('task_fields'), '{:.1f}', 100)} "
          f"| {cell(g('probe_contains'), '{:.1f}', 100)} "
          f"| {cell([v - base['probe_contains'] for v in g('probe_contains')], '{:+.1f}', 100)} "
          f"| {cell(g('prose_ppl'), '{:.3f}')} | {cell([v - base['prose_ppl'] for v in g('prose_ppl')], '{:+.3f}')} "
          f"| {cell([r['disturbance'] for r in rs], '{:.2e}')} | {cell([r['top_share'] for r in rs], '{:.3f}')} |")

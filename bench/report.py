"""Print each group's medians, their ratios to the baselines, and the targets hit or missed.

    pytest bench/ --benchmark-json=run.json
    python -m bench.report run.json [--chart chart.svg]

A ratio "speed vs X" is X's median divided by this variant's: above 1 means faster than X.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal, NamedTuple

Medians = dict[str, dict[str, float]]  # group -> variant -> median seconds

BASELINES = (
    "raw_psycopg",
    "raw_psycopg_copy",
    "raw_psycopg_executemany",
    "sqlalchemy_core",
    "sqlite",
    "eventsourcing",
)


class Target(NamedTuple):
    """``speed``: baseline median / persistence median >= bound; ``time``: the inverse <= bound;
    ``seconds``: persistence's median < bound."""

    group: str
    kind: Literal["speed", "time", "seconds"]
    bound: float
    baseline: str = ""

    def describe(self) -> str:
        if self.kind == "speed":
            return f"persistence >= {self.bound:g} x {self.baseline} (speed)"
        if self.kind == "time":
            return f"persistence time <= {self.bound:g} x {self.baseline}"
        return f"persistence median < {human(self.bound)}"

    def measure(self, group: dict[str, float]) -> float:
        if self.kind == "speed":
            return group[self.baseline] / group["persistence"]
        if self.kind == "time":
            return group["persistence"] / group[self.baseline]
        return group["persistence"]

    def holds(self, value: float) -> bool:
        return value >= self.bound if self.kind == "speed" else value <= self.bound


TARGETS = [
    Target("insert_one", "speed", 0.95, "raw_psycopg"),
    Target("insert_one", "speed", 1.5, "sqlalchemy_core"),
    Target("insert_many[100000]", "speed", 0.8, "raw_psycopg_copy"),
    Target("insert_many[100000]", "speed", 2.0, "raw_psycopg_executemany"),
    Target("insert_many[100000]", "speed", 1.0, "sqlite"),
    Target("get", "time", 1.1, "raw_psycopg"),
    Target("get", "speed", 1.0, "sqlalchemy_core"),
    Target("list_pending", "time", 1.5, "raw_psycopg"),
    Target("concurrent_insert", "speed", 1.3, "sqlite"),
    Target("health_check", "seconds", 0.001),
    Target("migrate_noop", "seconds", 0.5),
    # the event store (issue #27); bench.events gives the paired ratios and the wake-up p99
    Target("es_append_8_threads", "speed", 4.0, "eventsourcing"),
    Target("es_append_8_threads", "speed", 2.5, "sqlite"),
    Target("es_append_batch_100", "speed", 0.8, "raw_psycopg"),
    Target("es_read_all_catch_up", "speed", 0.8, "raw_psycopg"),
    Target("es_load_1000", "time", 1.3, "raw_psycopg"),
]


def load(path: Path) -> Medians:
    data = json.loads(path.read_text())
    groups: Medians = {}
    for bench in data["benchmarks"]:
        variant = (bench.get("params") or {}).get("variant") or bench["name"]
        groups.setdefault(bench["group"], {})[variant] = bench["stats"]["median"]
    return groups


def human(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(groups: Medians) -> str:
    lines = []
    for group in sorted(groups):
        variants = groups[group]
        base = [b for b in BASELINES if b in variants]
        lines.append(f"\n{group}")
        lines.append(f"  {'variant':<26}{'median':>12}" + "".join(f"{'vs ' + b:>26}" for b in base))
        for variant, median in sorted(variants.items(), key=lambda item: item[1]):
            ratios = "".join(f"{variants[b] / median:>25.2f}x" for b in base)
            lines.append(f"  {variant:<26}{human(median):>12}{ratios}")
    return "\n".join(lines)


def markdown(groups: Medians) -> str:
    """The medians as a Markdown table, with each variant's speed against the raw baselines."""
    lines = [
        "| group | variant | median | speed vs raw psycopg | speed vs sqlite |",
        "|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        variants = groups[group]
        raw = next(
            (variants[b] for b in ("raw_psycopg", "raw_psycopg_copy") if b in variants), None
        )
        for variant, median in sorted(variants.items(), key=lambda item: item[1]):
            vs_raw = f"{raw / median:.2f}x" if raw else ""
            vs_sqlite = f"{variants['sqlite'] / median:.2f}x" if "sqlite" in variants else ""
            name = f"**{variant}**" if variant == "persistence" else variant
            lines.append(f"| {group} | {name} | {human(median)} | {vs_raw} | {vs_sqlite} |")
    return "\n".join(lines)


class Tally(NamedTuple):
    hit: int
    missed: int
    unmeasured: int  # the run left out its group (pytest bench/ -k ...)

    def __str__(self) -> str:
        text = f"{self.hit} of {self.hit + self.missed} measured targets hit"
        return text + (f"; {self.unmeasured} not measured" if self.unmeasured else "")


def targets(groups: Medians) -> tuple[str, Tally]:
    lines, hit, missed, unmeasured = ["\ntargets (ratios of medians in this run)"], 0, 0, 0
    for target in TARGETS:
        try:
            value = target.measure(groups[target.group])
        except KeyError:
            lines.append(f"  [ -- ] {target.group}: {target.describe()}: not measured")
            unmeasured += 1
            continue
        holds = target.holds(value)
        hit += holds
        missed += not holds
        shown = human(value) if target.kind == "seconds" else f"{value:.3g}x"
        verdict = "hit " if holds else "MISS"
        lines.append(f"  [{verdict}] {target.group}: {target.describe()}: {shown}")
    return "\n".join(lines), Tally(hit, missed, unmeasured)


def chart(groups: Medians, path: Path) -> None:
    """One horizontal bar chart per group, persistence highlighted, as a standalone SVG."""
    bar_height, gap, label_width, width = 18, 6, 200, 760
    rows: list[tuple[str, Any]] = []
    for group in sorted(groups):
        rows.append(("group", group))
        for variant, median in sorted(groups[group].items(), key=lambda item: item[1]):
            rows.append(("bar", (variant, median, max(groups[group].values()))))
    height = sum(bar_height + gap + (10 if kind == "group" else 0) for kind, _ in rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Median time per operation '
        "(shorter is faster; bars scaled within each group)</text>",
    ]
    y = 40
    for kind, item in rows:
        if kind == "group":
            y += 10
            parts.append(f'<text x="10" y="{y + 13}" font-weight="bold">{item}</text>')
        else:
            variant, median, longest = item
            length = max(2.0, (width - label_width - 90) * median / longest)
            color = "#2b7bb9" if variant == "persistence" else "#b0b7bf"
            parts.append(f'<text x="24" y="{y + 13}">{variant}</text>')
            parts.append(
                f'<rect x="{label_width}" y="{y}" width="{length:.1f}" '
                f'height="{bar_height}" fill="{color}"/>'
            )
            parts.append(
                f'<text x="{label_width + length + 6:.1f}" y="{y + 13}">{human(median)}</text>'
            )
        y += bar_height + gap
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run", type=Path, help="a file written by pytest --benchmark-json")
    parser.add_argument("--chart", type=Path, help="also write an SVG bar chart of every group")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table instead")
    args = parser.parse_args(argv)
    groups = load(args.run)
    if args.markdown:
        print(markdown(groups))
        return 0
    print(table(groups))
    text, tally = targets(groups)
    print(text)
    if args.chart:
        chart(groups, args.chart)
        print(f"\nchart written to {args.chart}")
    print(f"\n{tally}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

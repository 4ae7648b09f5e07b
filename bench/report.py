"""The benchmark's output: one table (Markdown, so the README can show it as printed) and results.json."""
import json
import math


class Results:
    """Figures in the order measured; each may carry a ratio, its target and whether it is met."""

    def __init__(self, show=None):
        self.show = show  # called with each row's line as it is measured
        self.rows = []
        self.runs = {}  # raw load-generator runs by name, for results.json
        self.meta = {}
        self.problems = []  # anything that makes a figure untrustworthy: error answers, rows missing

    def add(self, figure, name, value, unit, ratio=None, ratio_of="", target=None, higher_is_better=True,
            note=""):
        met, digits = None, 2
        if target is not None and ratio is not None:
            def meets(x):
                return x >= target if higher_is_better else x <= target
            met = meets(ratio)
            # Printed with as many digits as it takes to show the verdict: 0.8457 is "0.846", not a
            # "0.85" marked as missing "≥ 0.85".
            while digits < 6 and meets(round(ratio, digits)) != met:
                digits += 1
        row = {"figure": figure, "name": name, "value": value, "unit": unit, "ratio": ratio, "ratio_of": ratio_of,
               "digits": digits, "target": target, "target_op": ">=" if higher_is_better else "<=", "met": met,
               "note": note}
        self.rows.append(row)
        if self.show:
            self.show(_line(row))
        return row

    def run(self, name, run):
        """Keep a load run (or a list of rounds) for results.json; returns it. Error answers are problems."""
        runs = run if isinstance(run, list) else [run]
        self.runs[name] = [r.as_dict() for r in runs] if isinstance(run, list) else run.as_dict()
        bad, errors = sum(r.non_2xx for r in runs), sum(r.errors for r in runs)
        if bad or errors:
            self.problem(f"{name}: {bad} answers not 2xx, {errors} socket errors or timeouts")
        if any(r.requests == 0 for r in runs):  # every request outlasted its round: no latency to report
            self.problem(f"{name}: no request answered within a round")
        return run

    def problem(self, text):
        self.problems.append(text)

    def table(self):
        lines = [HEAD, "|---|---|---:|---:|---|---|"]
        # The live fleet is the headline; the other figures follow in the order measured.
        lines += [_line(r) for r in sorted(self.rows, key=lambda r: r["figure"] != "L")]
        if self.problems:
            lines += ["", "**Problems — the figures they touch are not to be trusted:**"]
            lines += [f"- {text}" for text in self.problems]
        return "\n".join(lines)

    def header(self):
        m = self.meta
        return (f"{m.get('cores')} cores, {m.get('cpu', '?')}; load average {m.get('load_before')} before, "
                f"{m.get('load_after')} after; gunicorn {m.get('workers')} workers x {m.get('threads')} threads; "
                f"{m.get('postgres', '?')}; Redis {m.get('redis', '?')}; live fleet: {m.get('fleet_warmup')} s "
                f"warm-up and {m.get('fleet_window')} s measured per step; wrk {m.get('connections')} connections "
                f"(1 for latencies), {m.get('warmup')} s warm-up, {m.get('rounds')} rounds of {m.get('seconds')} s "
                f"per path; {m.get('total_seconds', '?')} s in all")

    def write(self, path):
        data = {"meta": self.meta, "problems": self.problems, "figures": self.rows, "runs": self.runs}
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")


HEAD = "| # | figure | measured | ratio | target | met |"


def _line(r):
    ratio = f"{_ratio(r['ratio'], r['digits'])} × {r['ratio_of']}" if r["ratio"] is not None else ""
    target = f"{r['target_op'].replace('>=', '≥').replace('<=', '≤')} {r['target']:g}" \
        if r["target"] is not None else ""
    met = {True: "yes", False: "**no**", None: ""}[r["met"]]
    name = r["name"] + (f" ({r['note']})" if r["note"] else "")
    return f"| {r['figure']} | {name} | {_number(r['value'])} {r['unit']} | {ratio} | {target} | {met} |"


def _ratio(value, digits):
    if value and abs(value) < 0.1 and digits == 2:
        return f"{value:.2g}"  # two significant figures: 0.0047, not 0.00
    return f"{value:.{digits}f}"


def _number(value):
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"

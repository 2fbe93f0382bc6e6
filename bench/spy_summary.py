"""Summarize a py-spy ``--format raw`` profile (collapsed stacks) by layer of the request path.

``python bench/spy_summary.py profile.txt`` prints, for each layer, the share of the samples
whose stack passes through it (inclusive; a sample counts once per layer), and the share
spent in that layer's own frames before the next layer is entered (exclusive), so "the limiter"
includes its Redis calls inclusively but not exclusively.  Layers are matched on file paths;
only samples inside a request call of ``bench/request_costs.py`` count.
"""

from __future__ import annotations

import sys
from collections import Counter

#: (layer, substring of a frame's file) — first match wins, in stack order.
LAYERS = [
    ("rate limiter (app/ratelimit.py)", "app/ratelimit.py"),
    ("rate limiter (app/ratelimit.py)", "limits/"),
    ("credential lookup (app/auth)", "app/auth/"),
    ("request log (app/logs.py)", "app/logs.py"),
    ("serialization (app/dumping.py, presenters, json)", "dumping.py"),
    ("serialization (app/dumping.py, presenters, json)", "presenters.py"),
    ("serialization (app/dumping.py, presenters, json)", "json/encoder.py"),
    ("serialization (app/dumping.py, presenters, json)", "flask/json"),
    ("redis-py", "redis/"),
    ("psycopg", "psycopg/"),
    ("SQLAlchemy ORM/Core", "sqlalchemy/"),
    ("flask-smorest / webargs / marshmallow", "flask_smorest"),
    ("flask-smorest / webargs / marshmallow", "webargs"),
    ("flask-smorest / webargs / marshmallow", "marshmallow"),
    ("flask-cors", "flask_cors"),
    ("flask-sqlalchemy", "flask_sqlalchemy/"),
    ("Flask / Werkzeug", "flask/"),
    ("Flask / Werkzeug", "werkzeug/"),
]


#: Only samples taken inside a request call (``bench/request_costs.py``'s ``call``) count.
MARK = "call (bench/request_costs.py"


def main(path: str) -> int:
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in open(path, encoding="utf-8"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        if MARK not in stack:
            continue  # set-up, not a request
        total += samples
        seen = set()
        innermost = "other (app code, stdlib)"
        for frame in stack.split(";"):
            for layer, needle in LAYERS:
                if needle in frame:
                    seen.add(layer)
                    innermost = layer
                    break
        for layer in seen:
            inclusive[layer] += samples
        exclusive[innermost] += samples
    print(f"{total} samples")
    print("| Layer | inclusive | exclusive |")
    print("|---|---:|---:|")
    for layer in sorted(set(inclusive) | set(exclusive), key=lambda k: -exclusive[k]):
        print(f"| {layer} | {inclusive[layer] / total:.0%} | {exclusive[layer] / total:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

"""HOSTED_ONLY.md stays true: module and flag tables match the code, hosted routes are absent."""

import re
from pathlib import Path

from app import MODULES
from config import setting_types

DOC = (Path(__file__).resolve().parent.parent / "HOSTED_ONLY.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, flags=re.M | re.S)
    assert match, f"HOSTED_ONLY.md lacks the section {title!r}"
    return match.group(1)


def _first_column(section: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_module_table_matches_modules():
    rows = dict(re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", _section("Modules in this repository"),
                           flags=re.M))
    assert set(rows) == {m.name for m in MODULES}
    for module in MODULES:
        gate = module.requires or module.disabled_by
        if gate:
            assert f"`{gate}" in rows[module.name], (module.name, gate)
        else:
            assert rows[module.name].startswith("always"), module.name


def test_flag_table_matches_config():
    flags = {name for name in setting_types()
             if name.startswith("DISABLE_") or name in ("EXTERNAL_AUTH_BACKEND", "CONSOLE_ENABLED")}
    assert set(_first_column(_section("Packaging flags"))) == flags
    gates = {m.requires for m in MODULES} | {m.disabled_by for m in MODULES}
    # METRICS_ENABLED gates an operator endpoint, not a part of the product's surface.
    assert gates - {None} <= flags | {"METRICS_ENABLED"}


def test_hosted_only_routes_are_absent(make_app):
    flags = {"EXTERNAL_AUTH_BACKEND": True, "INTERNAL_AUTH_TOKEN": "t" * 40}
    app = make_app(**flags)
    client = app.test_client()
    routes = _first_column(_section("Hosted only (not in this repository)"))
    assert routes
    rules = [r.rule for r in app.url_map.iter_rules()]
    for route in routes:
        method, path = route.split(" ", 1)
        concrete = path.replace("{ref}", "agt_aaaaaaaaaaaa")
        assert path.replace("{ref}", "<ref>") not in rules
        response = client.open(concrete, method=method)
        assert response.status_code in (404, 405), route

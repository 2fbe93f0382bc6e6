"""docs/deploying.md works as written where it can run here: the SQL of step 3 creates a role
and database on a throwaway PostgreSQL cluster, and Cueline migrates and passes
``config check --connect`` as that unprivileged role.  Other pages' examples that must not
collide (the example users of delegation.md and integrating.md) are checked here too, and the
README links every page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from config import setting_types

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FLASK = str(Path(sys.executable).parent / "flask")


def _block(page: str, name: str) -> str:
    text = (DOCS / page).read_text()
    match = re.search(rf"<!-- doc-test: {re.escape(name)} -->\n```\w*\n(.*?)\n```", text, re.S)
    assert match, f"{page} has no doc-test block {name!r}"
    return match.group(1)


def test_database_and_role_of_step_3(pg_cluster, tmp_path):
    sql = _block("deploying.md", "create-database")
    password = re.search(r"PASSWORD '([^']+)'", sql).group(1)
    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        for statement in filter(None, (s.strip() for s in sql.split(";"))):
            conn.execute(statement)
        superuser, = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'cueline'"
                                  ).fetchone()
    assert superuser is False
    url = f"postgresql://cueline:{password}@127.0.0.1:{pg_cluster.port}/cueline"
    env = {k: v for k, v in os.environ.items()
           if k not in setting_types() and not k.startswith(("FLASK_", "PROMETHEUS_"))}
    env.update({"FLASK_APP": "wsgi", "ENV": "test", "DATABASE_URL": url,
                "WEB_CONCURRENCY": "1"})
    check = [FLASK, "config", "check", "--connect", "--env-file", str(tmp_path / "none")]
    before = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert before.returncode == 1 and "run: flask --app wsgi db upgrade" in before.stderr
    migrated = subprocess.run([FLASK, "db", "upgrade"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    after = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert after.returncode == 0, after.stderr
    assert "schema up to date" in after.stdout
    with psycopg.connect(url) as conn:
        owner, = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'users'"
                              ).fetchone()
    assert owner == "cueline"


def _emails(page: str) -> set[str]:
    return set(re.findall(r"[\w.+-]+@example\.com", (DOCS / page).read_text()))


def test_delegation_and_integrating_examples_use_distinct_users():
    """Followed in order on one server, the integrator proxy's sign-up must not meet an
    address delegation.md already mirrored (409 email_taken)."""
    integrating = (DOCS / "integrating.md").read_text()
    signups = set(re.findall(r'/auth/signup .*?"email": "([^"]+)"', integrating, re.S))
    assert signups, "integrating.md has no sign-up example"
    assert not signups & _emails("delegation.md"), signups & _emails("delegation.md")


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in readme, page.name
    assert "(bench/README.md)" in readme

"""``veil-server`` without its extras: a node on files serves, and what needs an extra says which.

Each case runs in a fresh interpreter in which psycopg, pyspark and distributed cannot be
imported, as on a node installed without ``[postgres]``, ``[spark]`` or ``[dask]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from veil_server.cli.demo import init_node_folder

BLOCK = "import sys\nfor m in ('psycopg', 'pyspark', 'distributed'):\n    sys.modules[m] = None\n"


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=180)


def test_a_node_on_files_serves_without_extras(tmp_path) -> None:
    out = _run("""
        import json, sys
        from pathlib import Path
        import veil
        from veil_server.api.server import run_server
        from veil_server.cli.demo import init_node_folder
        from veil_server.config import load_config
        folder = Path(sys.argv[1])
        tokens = init_node_folder(folder, rows=1500, listen="127.0.0.1:0", disclosure="exact")
        with run_server(load_config(folder / "veil.toml")) as node:
            with veil.connect(f"127.0.0.1:{node.port}", token=tokens["alice"], home=folder / "home") as c:
                df = c.query("SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", purpose="research")
        print(json.dumps({"rows": int(df["n"].sum()),
                          "loaded": [m for m in ("psycopg", "pyspark", "distributed") if sys.modules.get(m)]}))
        """, str(tmp_path / "node"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"rows": 1500, "loaded": []}


def test_what_needs_an_extra_names_it(tmp_path) -> None:
    init_node_folder(tmp_path, rows=10)  # the demo's dataset, moved to a PostgreSQL table below
    config = tmp_path / "veil.toml"
    text = config.read_text(encoding="utf-8")
    source = next(line for line in text.splitlines() if line.startswith("source = "))
    config.write_text(text.replace(source, 'format = "postgres"\ntable = "clinic.admissions"'), encoding="utf-8")
    out = _run("""
        import sys
        from veil_server.config import ConfigError, load_config
        from veil_server.extras import MissingExtra
        from veil_server.state.statedb import PostgresDatabase
        try:
            load_config(sys.argv[1])
        except ConfigError as e:
            print(e)
        try:
            PostgresDatabase("host=127.0.0.1", "veil")
        except MissingExtra as e:
            print(e)
        """, str(config))
    assert out.returncode == 0, out.stderr
    config_error, state_error = out.stdout.splitlines()
    assert "format = \"postgres\"" in config_error and "pip install 'veil-server[postgres]'" in config_error
    assert "state backend" in state_error and "pip install 'veil-server[postgres]'" in state_error

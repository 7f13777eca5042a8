"""deploy/: what can be checked without a container engine or systemd (issue 20).

The files parse; the image runs as a non-root user with its state on a volume; the compose file's
node is read-only, unprivileged and passes no password; and the commands the image and the unit
run (entrypoint, health check, `ExecStartPre`, `ExecStart`) work, word for word, in this plain
venv against a real node."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def docker_env() -> dict[str, str]:
    env = {}
    for rest in instruction("ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def unit() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (DEPLOY / "veil-node.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, line
        current.append((key, value))
    return sections


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local(argv: list[str]) -> list[str]:
    """The image's or the unit's command with `veil` taken from this venv."""
    head = argv[0]
    if head == "veil" or head.endswith("/bin/veil"):
        return [str(VENV_BIN / "veil")] + argv[1:]
    return argv


def test_the_dockerfile_runs_unprivileged_with_state_on_a_volume():
    assert instruction("FROM")[0].startswith("python:3.11")
    user = instruction("USER")[-1]
    assert user.split(":")[0] not in ("root", "0") and user.split(":")[0].isdigit()
    assert json.loads(instruction("VOLUME")[0]) == ["/var/lib/veil"]
    env = docker_env()
    assert env["VEIL_STATE_DIR"].startswith("/var/lib/veil/") and env["VEIL_HOME"].startswith("/var/lib/veil/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written outside the volume
    for rest in instruction("COPY"):
        assert (ROOT / rest.split()[0]).is_dir()
    health = instruction("HEALTHCHECK")[0]
    assert "--interval=" in health and " CMD " in f" {health}"
    assert json.loads(health.split(" CMD ", 1)[1])[:3] == ["veil", "node", "health"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["veil", "node", "serve"]
    assert json.loads(instruction("CMD")[0]) == ["--config", env["VEIL_CONFIG"]]


def test_the_compose_file_parses_and_its_node_is_locked_down():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "node"}
    node = services["node"]
    assert (DEPLOY / node["build"]["context"] / node["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert node["read_only"] is True and "/tmp" in node["tmpfs"]
    assert node["user"].split(":")[0] not in ("0", "root")
    assert node["cap_drop"] == ["ALL"] and "no-new-privileges:true" in node["security_opt"]
    assert "veil-state:/var/lib/veil" in node["volumes"]
    assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD"
    env = node["environment"]
    assert env["VEIL_STATE_BACKEND"] == "postgres" and "password" not in env["VEIL_STATE_CONNINFO"].lower()
    for secret in compose["secrets"].values():  # referenced relative to deploy/, never committed
        assert not (DEPLOY / secret["file"]).exists()
    assert set(compose["volumes"]) == {"pg-data", "veil-state"}


def test_the_compose_environment_is_one_the_node_accepts(tmp_path):
    """The variables the compose file sets are ones the node reads, with values it accepts."""
    from veil_server.cli.demo import init_node_folder
    from veil_server.config import parse_config

    folder = tmp_path / "node"
    init_node_folder(folder, rows=200, tls=True)
    env = {k: str(v) for k, v in yaml.safe_load((DEPLOY / "compose.yaml").read_text())
           ["services"]["node"]["environment"].items()}
    config = parse_config(tomllib.loads((folder / "veil.toml").read_text()), base_dir=folder, env=env)
    assert config.state.backend == "postgres" and config.state.conninfo == "host=postgres dbname=veil user=veil"
    assert config.console.enabled and config.console.listen == "0.0.0.0:8443"
    assert config.metrics.enabled and config.metrics.listen == "0.0.0.0:9464"


def test_the_systemd_unit_parses():
    sections = unit()
    assert set(sections) == {"Unit", "Service", "Install"}
    service = dict(sections["Service"])
    assert service["User"] not in ("root", "0") and service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"] == "/var/lib/veil"
    assert shlex.split(service["ExecStartPre"])[1:3] == ["node", "check"]
    assert shlex.split(service["ExecStart"])[1:3] == ["node", "serve"]
    assert dict(sections["Install"])["WantedBy"] == "multi-user.target"


@pytest.fixture()
def node_folder(tmp_path):
    folder = tmp_path / "node"
    r = subprocess.run([str(VENV_BIN / "veil"), "node", "init", str(folder), "--rows", "500"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return folder


def test_the_image_entrypoint_and_health_check_work_in_a_plain_venv(node_folder, tmp_path):
    env_file = docker_env()
    config = str(node_folder / "veil.toml")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env.update({k: v for k, v in env_file.items() if k.startswith(("VEIL_", "PYTHON"))})
    # The image's paths, moved into this test's folder; its ports, moved to a free one.
    env.update(VEIL_CONFIG=config, VEIL_STATE_DIR=str(tmp_path / "volume" / "state"),
               VEIL_HOME=str(tmp_path / "volume" / "home"), VEIL_LISTEN=f"127.0.0.1:{port}",
               VEIL_TARGET=f"127.0.0.1:{port}", VEIL_MTLS_LISTEN="127.0.0.1:0",
               VEIL_CA=str(node_folder / "tls" / "ca.pem"))
    entry = json.loads(instruction("ENTRYPOINT")[0]) + json.loads(instruction("CMD")[0])
    entry = [config if a == env_file["VEIL_CONFIG"] else a for a in entry]
    health = json.loads(instruction("HEALTHCHECK")[0].split(" CMD ", 1)[1])

    proc = subprocess.Popen(local(entry), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"(port {port})" in line, line + proc.stderr.read() if proc.poll() is not None else line
        r = subprocess.run(local(health), env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "SERVING", r.stderr
        assert (tmp_path / "volume" / "state").is_dir()  # the state went to the volume
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    # The log on stderr is JSON (the image sets VEIL_LOG_FORMAT=json).
    first = proc.stderr.read().splitlines()[0]
    assert json.loads(first)["node"] == "demo-node"
    r = subprocess.run(local(health), env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3  # a stopped node is unhealthy: unreachable


def test_the_units_check_refuses_a_broken_config(node_folder, tmp_path):
    service = dict(unit()["Service"])
    config = str(node_folder / "veil.toml")
    pre = [config if a == "/etc/veil/veil.toml" else a for a in shlex.split(service["ExecStartPre"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    assert subprocess.run(local(pre), env=env, capture_output=True, text=True).returncode == 0
    broken = node_folder / "veil.toml"
    broken.write_text(broken.read_text().replace("[node]\n", "[node]\nmin_group_sise = 10\n", 1))
    r = subprocess.run(local(pre), env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean min_group_size" in r.stderr

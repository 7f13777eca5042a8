"""``--config``: which ``veil.toml`` a node command reads (``VEIL_CONFIG``, else ``./veil.toml``)."""

from __future__ import annotations

import argparse
import os

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import NodeConfig


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="path to veil.toml (env VEIL_CONFIG, default ./veil.toml)")


def config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("VEIL_CONFIG") or "veil.toml"


def load_node_config(args: argparse.Namespace) -> NodeConfig:
    from ..config import ConfigError, load_config

    try:
        return load_config(config_path(args))
    except ConfigError as e:
        raise ValueError(f"configuration: {e}") from None

"""The witness (issue 15): keeps the latest checkpoint of each log it follows and cosigns a new
one only if it is consistent with it (C2SP tlog-witness ``add-checkpoint``).

Run standalone by an auditor (``veil witness init`` / ``veil witness serve``), or inside a node
for its federation peers' logs (``[witness] serve``). The node's side, submitting its own
checkpoints to its witnesses, is :mod:`veil_server.audit.witnessing`.
"""

from .service import WitnessServer, node_witness, serve_witness
from .settings import WitnessConfig, load_witness_config
from .state import WitnessState

__all__ = ["WitnessServer", "WitnessState", "WitnessConfig", "load_witness_config", "node_witness",
           "serve_witness"]

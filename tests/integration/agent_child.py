"""``wattshift agent`` in a process of its own, over the simulated NVML library, so the real
nvidia-ml-py binding runs under the agent as it would on a GPU host.

Usage: agent_child.py CONFIG SEED CARDS LOAD
(SEED makes the cards' UUIDs; LOAD, 0..1, is the job each card runs.)
"""

from __future__ import annotations

import sys

from wattshift.daemon.cli.main import main
from wattshift.simulators.nvml_lib import SimulatedGpu, simulated_nvml

if __name__ == "__main__":
    config, seed, count, load = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    cards = [SimulatedGpu("H100-SXM", ramp_s=0.2) for _ in range(count)]
    for card in cards:
        card.set_job(load, pids=[4242] if load else [])
    with simulated_nvml(cards, seed=seed):
        sys.exit(main(["agent", "--config", config]))

"""`python -m flow.health.sim`: the same as `flow health sim`."""

from __future__ import annotations

from flow.cli.sim_cmd import sim

if __name__ == "__main__":
    sim.main(prog_name="python -m flow.health.sim")

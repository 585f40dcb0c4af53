"""The service, in rooms by concern (docs/architecture.md):

- ``control``: the loop, sequencer and actuator;
- ``config``: the site file, policy files and the YAML loader;
- ``mqtt``: commands in, state out;
- ``journal``: the durable audit log;
- ``backtest``: replay and the hindsight optimum;
- ``runtime``: a daemon assembled from a site file, with the operator's controls around it;
- ``cli`` and ``demo``: the entry points.

Nothing outside the daemon imports it; the rooms import each other only downwards, as each
room's ``__init__`` says.
"""

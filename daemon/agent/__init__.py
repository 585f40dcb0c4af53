"""``wattshift agent``: the process on each GPU host that owns its NVML and speaks to the
controller over the site's MQTT broker (:mod:`wattshift.drivers.agent_wire`).

May import: ``model/``, ``drivers/``, ``daemon/config/`` and ``daemon/mqtt/client``; only the
entry points (``daemon/cli``, ``daemon/demo``) import it.
"""

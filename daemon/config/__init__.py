"""Operator-edited files: the site file (and its GPU, price and MQTT blocks), policy files,
and the YAML loader that keeps line numbers and explains every error.

May import: wattshift.model, wattshift.policies (to check policy names and options), the standard
library, pydantic and PyYAML. Nothing here does I/O beyond reading the files it is given.
"""

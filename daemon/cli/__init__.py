"""The ``wattshift`` command: one module per sub-command, each registering itself, and the text
summaries they print.

May import: anything in wattshift; nothing imports it but the console entry point.
"""

def test_pyasic_imports_cleanly():
    import pyasic  # noqa: F401
    from wattshift.simulators import physics  # noqa: F401

def test_pyasic_imports_cleanly():
    import pyasic  # noqa: F401  # importing it is the test

    from wattshift.simulators import physics  # noqa: F401  # importing it is the test

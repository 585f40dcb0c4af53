def test_pyasic_imports_cleanly():
    import pyasic

    from wattshift.simulators import physics

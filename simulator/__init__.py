"""A simulated Windows Server reachable over real WinRM (WS-Management + PSRP).

Used by the tests, the demo and load tests. It imports nothing from ``producer`` or
``worker``. Entry point: ``python -m simulator serve --config FILE``.
"""

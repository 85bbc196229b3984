"""The remote layer: pypsrp sessions, PowerShell invocation and error mapping.

Only this package imports pypsrp (and requests). :mod:`worker.jobs` sees a
:class:`~worker.remote.session.RemoteSession` with one method, ``invoke(function, parameters)``,
and exceptions it hands to :func:`~worker.remote.errors.classify`.
"""

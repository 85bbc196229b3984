"""The JEA endpoint for WinCert Orchestrator: module build, session configuration, role capability.

See ``deploy/jea/README.md``. ``python -m deploy.jea.build OUTDIR`` assembles the
``WinCertOrchestrator`` module from ``worker/powershell/*.ps1``.
"""

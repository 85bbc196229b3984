"""Deployment artefacts for Windows hosts (``deploy/jea``: the JEA endpoint)."""

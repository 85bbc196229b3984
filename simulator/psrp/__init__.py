"""PSRP server side (MS-PSRP) on psrpcore: runspace pools, pipelines, command dispatch."""

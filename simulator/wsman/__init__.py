"""WS-Management over HTTP(S) (MS-WSMV): SOAP framing, auth, encryption, the shell service."""

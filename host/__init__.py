"""Parent instance: the untrusted host around the enclave.

Owns ``vsock-proxy`` (a byte relay with the real tool's allowlist), the simulated NSM device server
(``nsm-sim``) and the ``nitro-cli`` simulation (EIF build and measurement, enclave lifecycle). It relays
and launches; it never decrypts anything.
"""

__all__: list[str] = []

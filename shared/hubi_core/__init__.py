"""hubi_core: the code that runs unchanged on MicroPython and CPython.

Codec, crypto suite 1 (P-256 / SHA-256 / ECDSA RFC 6979), CPK with separating keys, the linear
sum, the serial link protocol and the QR encoder. Nothing here imports a CPython-only module at
top level; CPython speed-ups (``cryptography``) are optional back ends chosen in ``suite``.
"""

SUITE = 1

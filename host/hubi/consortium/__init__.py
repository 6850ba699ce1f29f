"""The consortium of banks (DESIGN §6): validation pool, ordering on etcd (or embedded SQLite),
log applier, checkpoints through the log, and the ``hubi consortium`` supervisor.

Modules: ``endorse`` (endorsements, policy), ``entries`` (log keys and values), ``orderer``
(interface + embedded SQLite orderer), ``etcd_orderer``, ``state`` (per-bank applied state),
``node`` (ConsortiumNode: validate/submit/apply), ``transport`` (peer validation over HTTP or
in-process), ``service`` (bank-node wiring, embedded consortium), ``supervisor`` (``up``/``status``).
See docs/consortium.md.
"""

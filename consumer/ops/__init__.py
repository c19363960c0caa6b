"""The operator commands, one module each: ``migrate``, ``lag``, ``replay``, ``dlq redrive``.

``_kafka`` (bounded, group-less ``read_committed`` clients, offset ranges) and ``_render``
(tables, progress) are what they share.
"""

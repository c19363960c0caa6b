"""The benchmark of routing-persistence (``python -m bench.run``; see ``bench/RESULTS.md``).

It measures, on the local stack and in interleaved rounds, this service (and another checkout's,
for A/B) against L, a limit a consumer can reach (:mod:`bench.limit`), a peer sink (the Debezium
JDBC sink on Kafka Connect, as parallel as the service) and a naive port of the B6 functions,
checking every system's final rows against an oracle. Nothing here is imported by the service,
and no test asserts a speed.
"""

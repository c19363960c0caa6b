"""The benchmark of routing-persistence (``python -m bench.run``; see ``bench/RESULTS.md``).

It measures, in one run and on the local stack, this service against a naive port of the B6
functions, the two raw ceilings (Kafka alone, PostgreSQL alone) and a peer sink (the Debezium JDBC
sink on Kafka Connect), checking every system's final rows against an oracle. Nothing here is
imported by the service, and no test asserts a speed.
"""

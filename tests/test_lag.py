"""``routing-persistence lag``, run as an operator runs it (the real CLI, a real broker).

Expected numbers come from the producer's own acknowledgements (offsets and timestamps) and from
offsets committed here, never from the code under test.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.settings import Settings
from schemas import EventType, build_event
from tests.conftest import Database, Services, Topics, free_port, unique
from tests.ops_helpers import (
    CLI,
    cli_env,
    commit_offsets,
    committed_offsets,
    cost_payload,
    end_offsets,
    open_transaction,
    produce_raw,
    run_cli,
    run_consumer_until_caught_up,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def lag_settings(services: Services, topics: Topics) -> Settings:
    """Settings for this test's topics and a group of its own (lag needs no database)."""
    return Settings(
        kafka_bootstrap_servers=services.kafka_bootstrap,
        group_id=unique("group"),
        topic_snapshots=topics.snapshots,
        topic_costs=topics.costs,
        topic_policies=topics.policies,
        topic_dlq=topics.dlq,
        metrics_port=0,
    )


async def _produce_spread(
    settings: Settings, topics: Topics, n: int
) -> list[tuple[TopicPartition, int, int]]:
    """``n`` records over the three source topics and their partitions (keys spread them)."""
    records = [
        (topics.sources[i % 3], f"key-{i}".encode(), b'{"not": "decoded by lag"}') for i in range(n)
    ]
    return await produce_raw(settings.kafka_bootstrap_servers, records)


def _rows(document: dict[str, object]) -> dict[TopicPartition, dict[str, object]]:
    rows = document["partitions"]
    assert isinstance(rows, list)
    return {TopicPartition(r["topic"], r["partition"]): r for r in rows}


async def test_lag_counts_unconsumed_records_then_zero_after_commit(
    lag_settings: Settings, topics: Topics
) -> None:
    n = 47
    produced = await _produce_spread(lag_settings, topics, n)
    per_partition = Counter(tp for tp, _, _ in produced)
    first_ts: dict[TopicPartition, int] = {}
    for tp, _, ts in sorted(produced, key=lambda p: p[1]):
        first_ts.setdefault(tp, ts)
    ends = await end_offsets(lag_settings.kafka_bootstrap_servers, topics.sources)
    assert sum(ends.values()) == n

    # The consumer never ran: nothing committed, everything is lag.
    over = await run_cli(lag_settings, "lag", "--json", "--max-lag", str(n - 1))
    assert over.code == 1, over.stderr
    assert f"total lag {n} exceeds --max-lag {n - 1}" in over.stderr
    document = over.json()
    assert document["group"] == lag_settings.group_id
    assert document["total_lag"] == n
    rows = _rows(document)
    assert set(rows) == set(ends)  # every partition of the three topics, no more
    measured_at = time.time()
    for tp, row in rows.items():
        assert row["committed"] is None
        assert row["log_end"] == ends[tp] == per_partition[tp]
        assert row["lag"] == per_partition[tp]
        if per_partition[tp]:
            # The age of the oldest unconsumed record, from its own timestamp.
            age = measured_at - first_ts[tp] / 1000
            assert isinstance(row["lag_seconds"], float)
            assert 0 <= row["lag_seconds"] <= age + 1
        else:
            assert row["lag_seconds"] == 0.0

    at_limit = await run_cli(lag_settings, "lag", "--json", "--max-lag", str(n))
    assert at_limit.code == 0, at_limit.stderr

    # Part of the work committed: the lag is what remains after each committed offset.
    busy = max(per_partition, key=lambda tp: per_partition[tp])
    partial = {busy: per_partition[busy] - 2}
    await commit_offsets(lag_settings.kafka_bootstrap_servers, lag_settings.group_id, partial)
    middle = (await run_cli(lag_settings, "lag", "--json")).json()
    assert _rows(middle)[busy]["committed"] == per_partition[busy] - 2
    assert _rows(middle)[busy]["lag"] == 2
    assert middle["total_lag"] == n - per_partition[busy] + 2

    # Everything committed (as the consumer does after applying): zero lag, zero seconds, exit 0.
    await commit_offsets(lag_settings.kafka_bootstrap_servers, lag_settings.group_id, ends)
    assert (
        await committed_offsets(lag_settings.kafka_bootstrap_servers, lag_settings.group_id) == ends
    )
    caught_up = await run_cli(
        lag_settings, "lag", "--json", "--max-lag", "0", "--max-lag-seconds", "0"
    )
    assert caught_up.code == 0, caught_up.stderr
    document = caught_up.json()
    assert document["total_lag"] == 0
    for tp, row in _rows(document).items():
        assert row["committed"] == ends[tp]
        assert row["lag"] == 0
        assert row["lag_seconds"] == 0.0


async def test_lag_of_the_real_consumer_before_and_after_it_catches_up(
    settings: Settings, database: Database
) -> None:
    n = 30
    await database.execute(
        'INSERT INTO "ExecutionRecord" ("id", "requestId", "tenantId") '
        "SELECT 'req-' || g, 'req-' || g, 'tenant-l' FROM generate_series(0, $1 - 1) AS g",
        n,
    )
    events = [
        build_event(EventType.COST, cost_payload(i), tenant_id="tenant-l", request_id=f"req-{i}")
        for i in range(n)
    ]
    await produce_raw(
        settings.kafka_bootstrap_servers,
        [(settings.topic_costs, e.key, e.value) for e in events],
    )
    ends = await end_offsets(settings.kafka_bootstrap_servers, settings.source_topics)
    before = await run_cli(settings, "lag", "--json", "--max-lag", "10")
    assert before.code == 1, before.stderr
    assert before.json()["total_lag"] == n == sum(ends.values())

    await run_consumer_until_caught_up(settings)
    assert (
        len(await database.fetch('SELECT 1 FROM "ExecutionRecord" WHERE "actualCost" IS NOT NULL'))
        == n
    )
    committed = await committed_offsets(settings.kafka_bootstrap_servers, settings.group_id)
    after = await run_cli(settings, "lag", "--json", "--max-lag", "0", "--max-lag-seconds", "0")
    assert after.code == 0, after.stderr
    document = after.json()
    assert document["total_lag"] == 0
    for tp, row in _rows(document).items():
        assert row["log_end"] == ends[tp]
        assert row["committed"] == committed.get(tp)
        assert row["lag"] == 0
        assert row["lag_seconds"] == 0.0


async def test_lag_counts_to_the_last_stable_offset_while_a_transaction_is_open(
    lag_settings: Settings, topics: Topics
) -> None:
    bootstrap = lag_settings.kafka_bootstrap_servers
    tp = TopicPartition(topics.costs, 0)
    await produce_raw(
        bootstrap, [(topics.costs, f"k{n}".encode(), b"v") for n in range(3)], partition=0
    )
    async with open_transaction(
        bootstrap, [(topics.costs, f"t{n}".encode(), b"v") for n in range(4)], partition=0
    ) as pending:
        # The records are in the log: a read_uncommitted reader's end offset is past them.
        assert [offset for _, offset in pending] == [3, 4, 5, 6]
        assert (await end_offsets(bootstrap, [topics.costs]))[tp] == 7
        result = await run_cli(lag_settings, "lag", "--json")
        assert result.code == 0, result.stderr
        row = _rows(result.json())[tp]
        # run reads read_committed: it can consume nothing past the last stable offset.
        assert (row["log_end"], row["lag"]) == (3, 3)
        assert result.json()["total_lag"] == 3


async def test_lag_watch_refreshes_until_interrupted(
    lag_settings: Settings, topics: Topics
) -> None:
    await produce_raw(lag_settings.kafka_bootstrap_servers, [(topics.costs, b"k", b"v")])
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        "lag",
        "--watch",
        "--json",
        env=cli_env(lag_settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            first = json.loads(await process.stdout.readline())
            second = json.loads(await process.stdout.readline())
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert first["total_lag"] == second["total_lag"] == 1
    assert second["measured_at"] > first["measured_at"]


async def test_lag_seconds_threshold_and_plain_table(
    lag_settings: Settings, topics: Topics
) -> None:
    await produce_raw(
        lag_settings.kafka_bootstrap_servers, [(topics.snapshots, b"k", b"v")], partition=1
    )
    await asyncio.sleep(1.2)
    old = await run_cli(lag_settings, "lag", "--max-lag-seconds", "1")
    assert old.code == 1, (old.stdout, old.stderr)
    assert f"{topics.snapshots}[1] lags" in old.stderr
    lines = old.stdout.splitlines()
    assert lines[0].split() == [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "LAG-SECONDS",
        "CONSUMER-ID",
        "HOST",
    ]
    assert len(lines) == 1 + 3 * topics.partitions + 1
    row = next(line.split() for line in lines if line.split()[1:3] == [topics.snapshots, "1"])
    assert row[3:6] == ["-", "1", "1"]
    assert float(row[6]) >= 1.0
    assert lines[-1].split()[:2] == ["TOTAL", "1"]

    patient = await run_cli(lag_settings, "lag", "--max-lag-seconds", "3600")
    assert patient.code == 0, patient.stderr


async def test_lag_names_the_members_that_own_partitions(
    lag_settings: Settings, topics: Topics
) -> None:
    member = AIOKafkaConsumer(
        *topics.sources,
        bootstrap_servers=lag_settings.kafka_bootstrap_servers,
        group_id=lag_settings.group_id,
        client_id="lag-test-member",
        enable_auto_commit=False,
    )
    await member.start()
    try:
        async with asyncio.timeout(30):
            while len(member.assignment()) < 3 * topics.partitions:
                await member.getmany(timeout_ms=200)
        document = (await run_cli(lag_settings, "lag", "--json")).json()
    finally:
        await member.stop()
    assert document["state"] == "Stable"
    for row in document["partitions"]:
        assert row["consumer_id"].startswith("lag-test-member")
        assert row["client_id"] == "lag-test-member"
        assert row["host"] == "127.0.0.1"


async def test_lag_exit_2_with_a_clear_message_when_kafka_is_unreachable(
    lag_settings: Settings,
) -> None:
    port = free_port()
    result = await run_cli(lag_settings, "lag", ROUTING_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    assert result.code == 2
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in result.stderr
    assert result.stdout == ""


async def test_lag_exit_2_when_a_topic_is_missing(lag_settings: Settings) -> None:
    missing = unique("missing")
    result = await run_cli(lag_settings, "lag", ROUTING_TOPIC_COSTS=missing)
    assert result.code == 2
    assert f"topic(s) not found on the broker: {missing}" in result.stderr
    # Looking must not create it (the local broker has auto.create.topics.enable=true).
    admin = AIOKafkaAdminClient(bootstrap_servers=lag_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()
    finally:
        await admin.close()


# --- the dashboard and alert rules watch metrics that exist -----------------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _exposed_series_names() -> set[str]:
    """Every series name the service's registry can expose (labelled families included)."""
    from consumer.service.metrics import ServiceMetrics

    names: set[str] = set()
    for family in ServiceMetrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_dashboard_and_alerts_use_only_exposed_metrics() -> None:
    exposed = _exposed_series_names()
    dashboard_text = (DEPLOY / "grafana" / "routing-persistence.json").read_text()
    dashboard = json.loads(dashboard_text)
    used = set(re.findall(r"routing_[a-z_]+", dashboard_text)) - {"routing_persistence"}
    assert used, "the dashboard queries no routing_* metric"
    assert used <= exposed, f"unknown metrics in the dashboard: {sorted(used - exposed)}"
    # Every family the issue lists has a panel.
    for family in (
        "routing_consumer_events_total",
        "routing_consumer_lag_records",
        "routing_consumer_lag_seconds",
        "routing_consumer_batch_duration_seconds_bucket",
        "routing_consumer_end_to_end_latency_seconds_bucket",
        "routing_consumer_db_retries_total",
        "routing_consumer_rebalances_total",
        "routing_consumer_assigned_partitions",
        "routing_consumer_last_commit_timestamp_seconds",
        "routing_build_info",
    ):
        assert family in used, family
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["expr"] for t in panel["targets"]), panel["title"]

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert {
        "RoutingConsumerLagHigh",
        "RoutingConsumerNoCommit",
        "RoutingConsumerDeadLetterRate",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert rule["expr"].count("(") == rule["expr"].count(")"), name
        in_rule = set(re.findall(r"routing_[a-z_]+", rule["expr"]))
        assert in_rule <= exposed, f"{name}: unknown metrics {sorted(in_rule - exposed)}"

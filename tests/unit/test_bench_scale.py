"""bench --scale's report from made-up rows: the CPU per event of each part, the ratios, and
what the shared stores cost per event. No figure of a real run is asserted."""

from __future__ import annotations

from bench.scale import CLUSTER, PG_REDIS, SQLITE, ScaleRow, median_rows, report


def row(setup: str, rate: float, p99: float, **cpu: float) -> ScaleRow:
    parts = {"gateway_cpu": 0.0, "consumer_cpu": 0.0, "broker_cpu": 0.0}
    parts |= {"postgres_cpu": 0.0, "redis_cpu": 0.0, **cpu}
    return ScaleRow(
        setup=setup, rate=rate, p99_ms=p99, failed=0, accepted=1000, ack_rate=rate, **parts
    )


def test_the_cpu_per_event_sums_every_part() -> None:
    shared = row(PG_REDIS, 500, 20, gateway_cpu=1.0, consumer_cpu=0.5, postgres_cpu=0.2)
    assert shared.total_cpu == 1.7
    assert shared.per_event(shared.total_cpu) == 1700  # µs over 1000 events
    assert shared.per_event(shared.stores_cpu) == 200


def test_the_report_prints_the_ratios_and_the_stores_cost() -> None:
    rows = [
        row(SQLITE, 1000, 10, gateway_cpu=0.5, consumer_cpu=0.3, broker_cpu=0.2),
        row(
            PG_REDIS,
            500,
            20,
            gateway_cpu=0.8,
            consumer_cpu=0.4,
            broker_cpu=0.2,
            postgres_cpu=0.3,
            redis_cpu=0.1,
        ),
        row(
            CLUSTER,
            750,
            30,
            gateway_cpu=1.0,
            consumer_cpu=0.5,
            broker_cpu=0.9,
            postgres_cpu=0.3,
            redis_cpu=0.1,
        ),
    ]
    lines = report(rows)
    assert lines[0].split()[:5] == ["setup", "req/s", "p99", "ms", "fail"]
    assert lines[1].split()[-1] == "1,000"  # 1.0 s of CPU over 1000 events
    assert lines[2].split()[-1] == "1,800"
    assert f"{PG_REDIS} ÷ {SQLITE}: req/s 0.50x, p99 2.00x, CPU/event 1.80x" in lines
    assert (
        "the shared stores cost 800 µs of CPU per event in all (400 µs in the stores "
        "themselves: PostgreSQL 300, Redis 100; the rest in syncgate's own processes)"
    ) in lines
    assert f"{CLUSTER} ÷ {PG_REDIS}: req/s 1.50x, p99 1.50x, CPU/event 1.56x" in lines


def test_a_run_without_the_cluster_reports_the_two_others() -> None:
    lines = report([row(SQLITE, 1000, 10, gateway_cpu=1.0), row(PG_REDIS, 500, 20, gateway_cpu=2)])
    assert not any(CLUSTER in line for line in lines)
    assert any(line.startswith("the shared stores cost 1,000 µs") for line in lines)


def test_the_medians_are_per_setup_in_the_order_measured() -> None:
    rows = [row(PG_REDIS, r, 10) for r in (100, 300, 200)] + [row(SQLITE, 50, 5)]
    medians = median_rows(rows)
    assert [(m.setup, m.rate) for m in medians] == [(PG_REDIS, 200), (SQLITE, 50)]

"""The table, the target ratios and the plot, from the medians of the rounds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bench.measure import Row

COLUMNS = (
    "system", "c", "req/s", "p50 ms", "p99 ms", "fail", "srv CPU s", "µs/req", "cons CPU s",
    "broker CPU s", "RSS MB", "ack/s", "depth@end", "gen CPU%",
)  # fmt: skip


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def median_rows(rows: Sequence[Row]) -> list[Row]:
    """One row per (system, concurrency): the median of each figure over the rounds."""
    groups: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.system, row.concurrency)].append(row)
    medians = []
    for (system, concurrency), group in groups.items():

        def med(get: Callable[[Row], float | None], group: list[Row] = group) -> float | None:
            return _median(get(row) for row in group)

        depth = med(lambda r: r.depth_at_end)
        medians.append(
            Row(
                system=system,
                concurrency=concurrency,
                rate=med(lambda r: r.rate) or 0.0,
                p50_ms=med(lambda r: r.p50_ms),
                p99_ms=med(lambda r: r.p99_ms),
                failed=int(med(lambda r: r.failed) or 0),
                server_cpu=med(lambda r: r.server_cpu) or 0.0,
                consumer_cpu=med(lambda r: r.consumer_cpu),
                broker_cpu=med(lambda r: r.broker_cpu) or 0.0,
                rss_mb=med(lambda r: r.rss_mb) or 0.0,
                ack_rate=med(lambda r: r.ack_rate),
                depth_at_end=None if depth is None else int(depth),
                accepted=int(med(lambda r: r.accepted) or 0),
                loadgen_cpu_share=med(lambda r: r.loadgen_cpu_share),
            )
        )
    return medians


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        [
            row.system,
            str(row.concurrency),
            _fmt(row.rate),
            _fmt(row.p50_ms, 2),
            _fmt(row.p99_ms, 2),
            str(row.failed),
            _fmt(row.server_cpu, 2),
            _fmt(row.cpu_us_per_request),
            _fmt(row.consumer_cpu, 2),
            _fmt(row.broker_cpu, 2),
            _fmt(row.rss_mb, 1),
            _fmt(row.ack_rate),
            _fmt(row.depth_at_end),
            # The Python load generator's own CPU share: near 100% means it was the limit.
            _fmt(None if row.loadgen_cpu_share is None else 100 * row.loadgen_cpu_share),
        ]
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [list(COLUMNS), *lines]) for i in range(len(COLUMNS))]

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join(
        [render(COLUMNS), render(["-" * w for w in widths])] + [render(cells) for cells in lines]
    )


def _find(rows: Sequence[Row], system: str, concurrency: int | None = None) -> Row | None:
    for row in rows:
        if row.system == system and (concurrency is None or row.concurrency == concurrency):
            return row
    return None


def _of(row: Row | None, figure: str) -> float | None:
    """A figure of a row that may be missing (a system left out of this run)."""
    value = getattr(row, figure) if row is not None else None
    return None if value is None else float(value)


def _ratio(top: float | None, bottom: float | None) -> str:
    if top is None or not bottom:
        return "n/a"
    return f"{top / bottom:.2f}x"


def ratios(rows: Sequence[Row], *, target_c: int) -> list[str]:
    """The four target ratios, each from figures of this same run."""
    sg, peer = _find(rows, "syncgate", target_c), _find(rows, "peer", target_c)
    ceiling_b = _find(rows, "B session", target_c)
    sg2 = _find(rows, "syncgate x2", target_c)
    sg_alone = _find(rows, "syncgate, consumer paused", target_c)
    sg2_alone = _find(rows, "syncgate x2, consumer paused", target_c)
    consumer, ceiling_d = _find(rows, "syncgate consumer"), _find(rows, "D consume")
    out = [f"targets at c={target_c} (medians; ratios only compare figures of this run):"]
    out.append(
        f"  (1) syncgate accepted-and-acked events/s ÷ peer: "
        f"{_ratio(_of(sg, 'ack_rate'), _of(peer, 'ack_rate'))}"
        f" ({_fmt(_of(sg, 'ack_rate'))} vs {_fmt(_of(peer, 'ack_rate'))}/s);"
        f" syncgate p99 {_fmt(_of(sg, 'p99_ms'), 1)} ms"
    )
    out.append(
        f"  (2) accepted per gateway CPU-second ÷ peer: "
        f"{_ratio(_of(sg, 'per_cpu_second'), _of(peer, 'per_cpu_second'))};"
        f" ÷ ceiling B: {_ratio(_of(sg, 'per_cpu_second'), _of(ceiling_b, 'per_cpu_second'))}"
        f" ({_fmt(_of(sg, 'per_cpu_second'))} vs {_fmt(_of(peer, 'per_cpu_second'))}"
        f" vs {_fmt(_of(ceiling_b, 'per_cpu_second'))})"
    )
    out.append(
        f"  (3) consumer ack rate on a backlog ÷ ceiling D (prefetch"
        f" {ceiling_d.concurrency if ceiling_d else '?'}): "
        f"{_ratio(_of(consumer, 'ack_rate'), _of(ceiling_d, 'ack_rate'))}"
        f" ({_fmt(_of(consumer, 'ack_rate'))} vs {_fmt(_of(ceiling_d, 'ack_rate'))}/s)"
    )
    out.append(
        f"  (4) 2 gateway workers ÷ 1, req/s: {_ratio(_of(sg2, 'rate'), _of(sg, 'rate'))}"
        f" ({_fmt(_of(sg2, 'rate'))} vs {_fmt(_of(sg, 'rate'))}) with the consumer running;"
        f" {_ratio(_of(sg2_alone, 'rate'), _of(sg_alone, 'rate'))}"
        f" ({_fmt(_of(sg2_alone, 'rate'))} vs {_fmt(_of(sg_alone, 'rate'))}) with it paused"
    )
    return out


def _per_event_us(cpu: float | None, row: Row | None) -> float | None:
    """CPU microseconds per accepted event (or request) of a row, if it has both."""
    if cpu is None or row is None or not row.accepted:
        return None
    return cpu / row.accepted * 1e6


def _verdict(*checks: tuple[float | None, float | None, float, str]) -> str:
    """PASS when every (value, floor, factor, sense) holds: sense '<=' means value <= factor *
    floor, '>=' means value >= factor * floor; n/a when a figure is missing from this run."""
    for value, floor, _factor, _sense in checks:
        if value is None or not floor:
            return "n/a"
    ok = all(
        (value <= factor * floor) if sense == "<=" else (value >= factor * floor)
        for value, floor, factor, sense in checks
        if value is not None and floor is not None
    )
    return "PASS" if ok else "FAIL"


def targets(rows: Sequence[Row], *, target_c: int) -> list[str]:
    """The performance issue's targets, each a ratio of figures of this same run, with its
    verdict: (1) against the Node.js peer, (2) against the gateway's parts B + C - A, (3)
    against ceiling D, (4) the broker's work against the Node.js peer's, and the FastAPI
    peer kept at bay."""
    sg, node, fastapi = (_find(rows, name, target_c) for name in ("syncgate", "node peer", "peer"))
    a, b, c = (_find(rows, name, target_c) for name in ("A static", "B session", "C publish"))
    drain, d = _find(rows, "syncgate consumer"), _find(rows, "D consume")

    def us(row: Row | None, cpu: str) -> float | None:
        return _per_event_us(_of(row, cpu), row)

    parts = None
    a_us, b_us, c_us = (us(row, "server_cpu") for row in (a, b, c))
    if a_us is not None and b_us is not None and c_us is not None:
        parts = b_us + c_us - a_us
    d_us = us(d, "consumer_cpu")
    live_us, drain_us = us(sg, "consumer_cpu"), us(drain, "consumer_cpu")
    sg_broker, node_broker = us(sg, "broker_cpu"), us(node, "broker_cpu")
    sg_ack, node_ack, fastapi_ack = (_of(r, "ack_rate") for r in (sg, node, fastapi))
    sg_p99, node_p99 = _of(sg, "p99_ms"), _of(node, "p99_ms")
    gateway_us = _of(sg, "cpu_us_per_request")
    drain_ack, d_ack = _of(drain, "ack_rate"), _of(d, "ack_rate")
    consumer = _verdict(
        (drain_us, d_us, 1.3, "<="), (live_us, d_us, 1.6, "<="), (drain_ack, d_ack, 0.95, ">=")
    )
    return [
        f"targets at c={target_c}, each PASS or FAIL on this run's medians (n/a: not measured):",
        f"  (1) {_verdict((sg_ack, node_ack, 0.6, '>='), (sg_p99, node_p99, 2.0, '<='))}"
        f"  acked/s ≥ 0.6x the Node peer: {_ratio(sg_ack, node_ack)}"
        f" ({_fmt(sg_ack)} vs {_fmt(node_ack)}); p99 ≤ 2x: {_ratio(sg_p99, node_p99)}"
        f" ({_fmt(sg_p99, 1)} vs {_fmt(node_p99, 1)} ms)",
        f"  (2) {_verdict((gateway_us, parts, 1.5, '<='))}"
        f"  gateway µs CPU/request ≤ 1.5x (B + C - A): {_ratio(gateway_us, parts)}"
        f" ({_fmt(gateway_us)} vs {_fmt(b_us)} + {_fmt(c_us)} - {_fmt(a_us)} = {_fmt(parts)})",
        f"  (3) {consumer}"
        f"  consumer µs CPU/event ≤ 1.3x D on a backlog: {_ratio(drain_us, d_us)}"
        f" ({_fmt(drain_us)} vs {_fmt(d_us)}); ≤ 1.6x live: {_ratio(live_us, d_us)}"
        f" ({_fmt(live_us)}); backlog acks/s ≥ 0.95x D: {_ratio(drain_ack, d_ack)}"
        f" ({_fmt(drain_ack)} vs {_fmt(d_ack)})",
        f"  (4) {_verdict((sg_broker, node_broker, 1.15, '<='))}"
        f"  broker µs CPU/event ≤ 1.15x the Node peer's: {_ratio(sg_broker, node_broker)}"
        f" ({_fmt(sg_broker)} vs {_fmt(node_broker)})",
        f"  (5) {_verdict((sg_ack, fastapi_ack, 2.5, '>='))}"
        f"  acked/s ≥ 2.5x the FastAPI peer: {_ratio(sg_ack, fastapi_ack)}"
        f" ({_fmt(sg_ack)} vs {_fmt(fastapi_ack)})",
    ]


def node_peer_comparison(rows: Sequence[Row], *, target_c: int) -> list[str]:
    """syncgate beside the Node.js peer at the target concurrency, figure by figure."""
    sg, node = _find(rows, "syncgate", target_c), _find(rows, "node peer", target_c)
    sg_drain, node_drain = _find(rows, "syncgate consumer"), _find(rows, "node peer consumer")

    def pair(figure: Callable[[Row | None], float | None], digits: int = 0) -> str:
        return f"{_fmt(figure(sg), digits)} vs {_fmt(figure(node), digits)}"

    def drain_us(row: Row | None) -> float | None:
        return _per_event_us(row.consumer_cpu if row else None, row)

    return [
        f"syncgate vs node peer at c={target_c} (medians of this run; syncgate first):",
        f"  acked/s {_ratio(_of(sg, 'ack_rate'), _of(node, 'ack_rate'))}"
        f" ({pair(lambda r: _of(r, 'ack_rate'))});"
        f" p99 {_ratio(_of(sg, 'p99_ms'), _of(node, 'p99_ms'))}"
        f" ({pair(lambda r: _of(r, 'p99_ms'), 1)} ms)",
        f"  µs CPU per event: gateway {pair(lambda r: _of(r, 'cpu_us_per_request'))};"
        f" consumer {pair(lambda r: _per_event_us(_of(r, 'consumer_cpu'), r))};"
        f" broker {pair(lambda r: _per_event_us(_of(r, 'broker_cpu'), r))}",
        f"  consumer on a backlog (prefetch {sg_drain.concurrency if sg_drain else '?'}):"
        f" {_fmt(_of(sg_drain, 'ack_rate'))} vs {_fmt(_of(node_drain, 'ack_rate'))} acks/s,"
        f" {_fmt(drain_us(sg_drain))} vs {_fmt(drain_us(node_drain))} µs CPU/event",
    ]


def plot(rows: Sequence[Row], path: Path) -> Path | None:
    """p99 latency against throughput, one line per system; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by_system: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.p99_ms is not None:
            by_system[row.system].append(row)
    figure, axes = plt.subplots(figsize=(8, 5))
    for system, points in sorted(by_system.items()):
        points.sort(key=lambda r: r.concurrency)
        axes.plot(
            [r.rate for r in points], [r.p99_ms or 0.0 for r in points], marker="o", label=system
        )
        for r in points:
            axes.annotate(f"c={r.concurrency}", (r.rate, r.p99_ms or 0), fontsize=7)
    axes.set_xlabel("throughput (accepted requests or confirmed publishes per second)")
    axes.set_ylabel("p99 latency (ms)")
    axes.set_yscale("log")
    # The ceilings run at ten times the systems' rates: on a linear axis syncgate and the
    # peer would share one sliver at the left.
    axes.set_xscale("log")
    axes.set_title("syncgate, the peer and the ceilings: p99 latency vs throughput")
    axes.grid(True, which="both", alpha=0.3)
    # Outside the axes, where it hides no point (bbox_inches="tight" keeps it in the file).
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path

"""Pushes a fixed set of metrics and log records to a vigil collector with
the real OpenTelemetry Python SDK and its OTLP exporters.

usage: otel_push.py http|grpc|delta ENDPOINT INSTANCE
  http:  ENDPOINT is the collector's HTTP base URL (http://127.0.0.1:PORT)
  grpc:  ENDPOINT is the collector's gRPC address (127.0.0.1:PORT)
  delta: like http, but the counter is exported with delta temporality

Exits non-zero unless every export the SDK made succeeded.
"""
import logging
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
try:  # renamed in recent SDKs
    from opentelemetry.sdk._logs.export import LogRecordExportResult as LogExportResult
except ImportError:
    from opentelemetry.sdk._logs.export import LogExportResult
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.metrics import Observation

mode, endpoint, instance = sys.argv[1], sys.argv[2], sys.argv[3]

if mode in ("http", "delta"):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    metric_args = {"endpoint": endpoint + "/v1/metrics"}
    log_args = {"endpoint": endpoint + "/v1/logs"}
else:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    metric_args = {"endpoint": endpoint, "insecure": True}
    log_args = {"endpoint": endpoint, "insecure": True}

results = []


class CheckedMetricExporter(OTLPMetricExporter):
    def export(self, *a, **k):
        r = super().export(*a, **k)
        results.append(("metrics", r == MetricExportResult.SUCCESS))
        return r


class CheckedLogExporter(OTLPLogExporter):
    def export(self, *a, **k):
        r = super().export(*a, **k)
        results.append(("logs", r == LogExportResult.SUCCESS))
        return r


resource = Resource.create(
    {
        "service.name": "checkout",
        "service.namespace": "shop",
        "service.instance.id": instance,
        "deployment.environment": "test",
    }
)

if mode == "delta":
    metric_args["preferred_temporality"] = {Counter: AggregationTemporality.DELTA}
exporter = CheckedMetricExporter(**metric_args)
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
provider = MeterProvider(resource=resource, metric_readers=[reader])
meter = provider.get_meter("vigil.test", "1.0")

if mode == "delta":
    meter.create_counter("shop.delta.orders", unit="{order}").add(5)
else:
    orders = meter.create_counter("shop.orders", unit="{order}", description="Orders placed")
    orders.add(3, {"payment.method": "card"})
    orders.add(2, {"payment.method": "cash"})
    meter.create_gauge("shop.queue.depth", unit="By", description="Bytes queued").set(42.5)
    meter.create_observable_gauge(
        "shop.cpu.utilization",
        callbacks=[lambda _options: [Observation(0.75)]],
        unit="1",
    )
    meter.create_up_down_counter("shop.carts.open").add(7)
    duration = meter.create_histogram("shop.checkout.duration", unit="s")
    for v in (0.004, 0.02, 0.3, 1.2, 7.0):
        duration.record(v, {"route": "/pay"})

if not provider.force_flush(timeout_millis=20_000):
    sys.exit("metrics: force_flush timed out")

if mode != "delta":
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(CheckedLogExporter(**log_args))
    )
    log = logging.getLogger("shop.checkout")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    log.info("order placed via %s", mode, extra={"order.id": "o-17"})
    log.warning("payment slow via %s", mode)
    log.error("payment failed via %s", mode)
    if not logger_provider.force_flush(timeout_millis=20_000):
        sys.exit("logs: force_flush timed out")
    logger_provider.shutdown()

provider.shutdown()
failed = [kind for kind, ok in results if not ok]
kinds = {kind for kind, _ in results}
want = {"metrics"} if mode == "delta" else {"metrics", "logs"}
if failed or kinds != want:
    sys.exit(f"exports: {results}")
print(f"{mode}: {len(results)} exports succeeded")

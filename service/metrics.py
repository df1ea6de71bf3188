"""Prometheus metrics, in a registry of their own so that several apps (tests) can coexist."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "detect", "align", "geometry", "recrop", "decode_asm", "unwrap", "texture", "compose", "fuse", "export")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram("facerecon_request_duration_seconds", "Reconstruction request latency",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.stage_duration = Histogram("facerecon_stage_duration_seconds", "Time per pipeline stage",
                                        ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.queue_duration = Histogram("facerecon_queue_duration_seconds",
                                        "Time an ONNX call waits for its micro-batch to start",
                                        buckets=STAGE_BUCKETS, registry=r)
        self.batch_size = Histogram("facerecon_batch_size", "Crops per ONNX call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r)
        self.queue_depth = Gauge("facerecon_queue_depth", "Requests admitted and not yet finished", registry=r)
        self.requests = Counter("facerecon_inference_requests_total", "Reconstruction requests by outcome",
                                ["outcome"], registry=r)
        self.faces_per_image = Histogram("facerecon_faces_per_image", "Faces reconstructed per image",
                                         buckets=(0, 1, 2, 3, 5, 10, 20), registry=r)
        self.model_info = Gauge("facerecon_model_info", "The model being served", ["name", "version", "providers"],
                                registry=r)
        for stage in STAGES:  # present from the start, so dashboards see every stage at zero
            self.stage_duration.labels(stage=stage)

"""Prometheus metrics, in a registry of their own so that several apps (tests) can coexist."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "detect", "align", "geometry", "recrop", "decode_asm", "unwrap", "albedo_fit", "texture", "relight", "compose", "fuse", "export")
# What a reconstruction request asked for: a single photo's output format, the batch endpoint's JSON for up
# to max_batch_images photos, or unknown for a request refused before its form was read.
FORMATS = ("glb", "obj", "json", "batch", "unknown")
OUTCOMES = ("success", "client_error", "rejected", "error")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram("facerecon_request_duration_seconds", "Reconstruction request latency",
                                          ["format"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_duration = Histogram("facerecon_stage_duration_seconds", "Time per pipeline stage",
                                        ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.queue_duration = Histogram("facerecon_queue_duration_seconds",
                                        "Time an ONNX call waits for its micro-batch to start",
                                        buckets=STAGE_BUCKETS, registry=r)
        self.batch_size = Histogram("facerecon_batch_size", "Crops per ONNX call",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r)
        self.queue_depth = Gauge("facerecon_queue_depth", "Requests admitted and not yet finished", registry=r)
        self.queue_capacity = Gauge("facerecon_queue_capacity",
                                    "Requests admitted at most (the queue_size setting); beyond it, 503", registry=r)
        self.requests = Counter("facerecon_inference_requests_total", "Reconstruction requests by format and outcome",
                                ["format", "outcome"], registry=r)
        self.faces_per_image = Histogram("facerecon_faces_per_image", "Faces reconstructed per image",
                                         buckets=(0, 1, 2, 3, 5, 10, 20), registry=r)
        self.model_info = Gauge("facerecon_model_info", "The model being served", ["name", "version", "providers"],
                                registry=r)
        self.model_ready = Gauge("facerecon_model_ready", "1 once the model is loaded and warm, else 0", registry=r)
        self.jobs_queued = Gauge("facerecon_jobs_queued",
                                 "Async jobs waiting to run in the job store (shared by replicas on Redis); "
                                 "NaN while the store cannot be read", registry=r)
        self.jobs_queue_capacity = Gauge("facerecon_jobs_queue_capacity",
                                         "Async jobs waiting at most (the max_queued_jobs setting); beyond it, 503",
                                         registry=r)
        # Present from the start, at zero, so that rates, ratios and dashboards see every series before
        # the first request of its kind (and a counter's first sample is 0, which rate() relies on).
        for stage in STAGES:
            self.stage_duration.labels(stage=stage)
        for fmt in FORMATS:
            self.request_duration.labels(format=fmt)
            for outcome in OUTCOMES:
                self.requests.labels(format=fmt, outcome=outcome)

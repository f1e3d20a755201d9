"""Configuration models: one frozen pydantic root with a sub-model per stage.

This module is a leaf: it imports nothing else from inspector, so every stage can use it.
"""

from __future__ import annotations

from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

#: Default of ``sources[*].max_pixels``: 50 MP, above any industrial camera's frame
#: (same value as :data:`inspector.imaging.DEFAULT_MAX_PIXELS`; this module is a leaf).
DEFAULT_MAX_PIXELS = 50_000_000

#: Backbones the encoder/decoder pair is defined for.
Backbone = Literal["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]


class AnomalyMapMode(StrEnum):
    """How the three per-layer distance maps are combined."""

    ADD = "add"
    MULTIPLY = "multiply"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Architecture of a Reverse Distillation model; stored in every checkpoint.

    Attributes:
        backbone: Encoder architecture (torchvision ResNet family, layers 1-3).
        image_size: Model input ``(height, width)`` in pixels; both multiples of 32.
        ocbe_width: Inner width of the OCBE bottleneck blocks: ``anomalib`` (width per group 64,
            loads anomalib checkpoints), ``official`` (RD4AD: 128 for wide_resnet50_2) or an
            explicit width per group.
        anomaly_map_mode: ``add`` (paper evaluation) or ``multiply``.
        sigma: Standard deviation of the Gaussian blur on the anomaly map.
    """

    backbone: Backbone = "wide_resnet50_2"
    image_size: tuple[int, int] = (256, 256)
    ocbe_width: Literal["anomalib", "official"] | int = "anomalib"
    anomaly_map_mode: AnomalyMapMode = AnomalyMapMode.ADD
    sigma: float = Field(default=4.0, gt=0)

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: object) -> object:
        # A single number means a square input, as on the command line (--image-size 256).
        return (value, value) if isinstance(value, int) else value

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        height, width = value
        if height <= 0 or width <= 0 or height % 32 or width % 32:
            nearest = tuple(max(32, round(v / 32) * 32) for v in value)
            raise ValueError(
                f"image size {height}x{width} is not a multiple of 32: the encoder halves it five "
                f"times and the decoder doubles it back, so shapes would not line up; "
                f"use e.g. {nearest[0]}x{nearest[1]}"
            )
        return value


class CalibrationMode(StrEnum):
    """How the checkpoint's thresholds are chosen after training."""

    AUTO = "auto"  # f1 when labelled anomalous validation images exist, else good_only
    F1 = "f1"
    GOOD_ONLY = "good_only"


class TrainConfig(_Frozen):
    """Training hyper-parameters; defaults are the paper's.

    Attributes:
        epochs: Maximum epochs (early stopping usually ends sooner).
        batch_size: Images per step.
        learning_rate: Adam learning rate.
        betas: Adam betas (the paper's; anomalib hard-codes (0.5, 0.99)).
        val_fraction: Share of the good training images held out for validation loss and
            calibration (at least one image).
        patience: Epochs without a validation-loss improvement before stopping; 0 disables.
        min_delta: Smallest validation-loss decrease that counts as an improvement.
        seed: Seeds the split, the initialisation and the batch order.
        device: ``auto`` picks CUDA when available.
        weights: Encoder weights: ``imagenet``, ``none`` or a path to a torchvision state dict.
        download: Whether ``imagenet`` may download when not cached.
        calibration: Threshold fitting mode.
        target_false_alarm_rate: For ``good_only``: share of good images allowed to be flagged.
    """

    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=0.005, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=1e-4, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights: str = "imagenet"
    download: bool = True
    calibration: CalibrationMode = CalibrationMode.AUTO
    target_false_alarm_rate: float = Field(default=0.005, gt=0, lt=1)


class PostprocessConfig(_Frozen):
    """Turning anomaly maps into decisions, masks and defect regions.

    Attributes:
        image_threshold: Override of the image threshold on the normalised 0..1 scale
            (``None``: the checkpoint's, which is 0.5 on that scale).
        pixel_threshold: Override of the pixel threshold on the normalised scale.
        min_defect_area_px: Smallest connected region, in original-frame pixels, kept as a defect.
        max_defects: Regions reported per frame at most (largest first).
        include_mask: Attach the PNG mask to anomalous results.
    """

    image_threshold: float | None = Field(default=None, ge=0, le=1)
    pixel_threshold: float | None = Field(default=None, ge=0, le=1)
    min_defect_area_px: int = Field(default=16, ge=1)
    max_defects: int = Field(default=50, ge=1)
    include_mask: bool = True


# --- the daemon: `inspector run --config FILE` ------------------------------------------------


class KafkaConfig(_Frozen):
    """Broker connection and topic names shared by the Kafka source and sinks.

    Attributes:
        bootstrap_servers: ``host:port`` list, comma-separated.
        client_id: Client id prefix shown in broker logs.
        security_protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` when SASL is used.
        sasl_username: SASL user.
        sasl_password: SASL password (never logged).
        ssl_cafile: CA bundle for SSL.
        frames_topic: Input topic (one encoded image per message).
        results_topic: Output topic (``inspector.result/v1`` JSON).
        dlq_topic: Dead letters: input that could not be processed, with the reason.
        group_id: Consumer group; replicas in one group split the partitions.
        max_message_bytes: Largest frame accepted and largest result produced; larger frames
            are dead-lettered.
        session_timeout_ms: Group session timeout (6000 is Kafka's minimum and joins fastest).
        heartbeat_interval_ms: Group heartbeat interval.
        commit_interval_ms: How often acknowledged offsets are committed.
        compression: Producer compression codec.
        linger_ms: Producer batching delay.
        request_timeout_ms: Producer/consumer request timeout.
    """

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "inspector"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    frames_topic: str = "inspector.frames"
    results_topic: str = "inspector.results"
    dlq_topic: str = "inspector.frames.dlq"
    group_id: str = "inspector"
    max_message_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    commit_interval_ms: int = Field(default=1_000, ge=10)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    linger_ms: int = Field(default=5, ge=0)
    request_timeout_ms: int = Field(default=30_000, ge=1000)

    def client_security_settings(self) -> dict[str, Any]:
        """kafka-python keyword arguments for the connection's security (source and sink)."""
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            settings["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            settings["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                settings["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile is not None:
            settings["ssl_cafile"] = self.ssl_cafile
        return settings


class KafkaSourceConfig(_Frozen):
    """Frames from the Kafka frames topic (connection and topic in ``kafka``).

    Attributes:
        type: Discriminator.
        topics: Topics to read; default: ``kafka.frames_topic``.
        decode_threads: Threads decoding images (OpenCV releases the GIL).
        max_poll_records: Records fetched per poll.
        decode_device: ``cuda`` decodes JPEG frames on the GPU (nvJPEG through torchvision),
            each poll's JPEG frames as one batch, so pixels go straight to the model without a
            host round trip; other formats, and JPEGs nvJPEG refuses, are decoded by OpenCV.
        fetch_max_wait_ms: Longest a fetch may wait at the broker for new frames (Kafka's
            default). Apache Kafka answers as soon as a frame arrives, so this costs no latency
            there; lower values only add empty fetches on an idle topic (an idle daemon used
            6.2 % of a core at 50 vs 3.2 % at 500). Brokers that hold every fetch to its end
            (Tansu, the embedded test broker) add up to this much latency per frame: the demo
            and the benchmark use 50 on it.
        max_pixels: Largest frame decoded, in pixels, read from the image header before
            decoding; larger frames are dead letters ``too_large`` (a 32 KB PNG can declare
            12000 x 12000 px: 432 MB once decoded).
        max_poll_decoded_bytes: Decoded bytes one poll may hold; the records beyond it are
            fetched again by the next poll (at least one record per poll).
    """

    type: Literal["kafka"] = "kafka"
    topics: tuple[str, ...] | None = None
    decode_threads: int = Field(default=2, ge=1)
    max_poll_records: int = Field(default=64, ge=1)
    decode_device: Literal["cpu", "cuda"] = "cpu"
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=10_000)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    max_poll_decoded_bytes: int = Field(default=512 * 1024 * 1024, ge=1)


class CameraSourceConfig(_Frozen):
    """One OpenCV camera.

    Attributes:
        type: Discriminator.
        camera_id: Id in results and metrics.
        uri: Device index (``"0"``), RTSP/HTTP URL, GStreamer pipeline or video file.
        backend: OpenCV capture backend.
        fps: Target frames per second taken from the stream (``None``: as fast as it comes).
        live: A live stream: keep only the newest frame and count stale drops. ``False`` for
            files that must be read completely.
        reconnect_initial_s: First reconnect delay after the stream breaks.
        reconnect_max_s: Longest reconnect delay (exponential backoff).
        loop: Restart a video file at its end (simulated cameras).
    """

    type: Literal["camera"] = "camera"
    camera_id: str
    uri: str
    backend: Literal["auto", "ffmpeg", "gstreamer", "v4l2"] = "auto"
    fps: float | None = Field(default=None, gt=0)
    live: bool = True
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    loop: bool = False


class DirectorySourceConfig(_Frozen):
    """Replay of recorded frames from files.

    Attributes:
        type: Discriminator.
        camera_id: Id in results and metrics.
        path: Folder or glob pattern (``frames/*.png``).
        fps: Replay rate (``None``: as fast as the pipeline takes them).
        loop: Start again after the last file.
        max_pixels: Largest image decoded, in pixels, read from the header before decoding;
            larger files are dead letters ``too_large``.
    """

    type: Literal["directory"] = "directory"
    camera_id: str = "replay"
    path: str
    fps: float | None = Field(default=None, gt=0)
    loop: bool = False
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)


SourceConfig = Annotated[
    KafkaSourceConfig | CameraSourceConfig | DirectorySourceConfig, Field(discriminator="type")
]


class BatcherConfig(_Frozen):
    """Micro-batching between sources and the model.

    Attributes:
        max_batch_size: Frames per inference batch at most.
        max_wait_ms: Longest wait for a batch to fill once its first frame arrived.
        queue_size: Capacity of each bounded queue between stages.
        max_in_flight_bytes: Decoded frame bytes admitted and not yet delivered, at most;
            sources wait (Kafka pauses its partitions) beyond it. One frame is always let in,
            so a frame larger than the budget still runs, alone.
    """

    max_batch_size: int = Field(default=8, ge=1)
    max_wait_ms: float = Field(default=20.0, ge=0)
    queue_size: int = Field(default=64, ge=1)
    max_in_flight_bytes: int = Field(default=2 * 1024**3, ge=1)


class WorkerConfig(_Frozen):
    """The model worker.

    Attributes:
        checkpoint: Checkpoint file written by ``inspector train`` or ``import-anomalib``.
        device: ``auto`` uses CUDA when available.
        warmup_batches: Batches run on start-up before reporting ready.
        precision: ``fp32`` (maps as in training), ``bf16`` (autocast; anomaly maps still
            computed in fp32), or ``auto`` (bf16 where the hardware has fast bf16: CUDA GPUs
            and CPUs with AMX/AVX512-BF16; fp32 elsewhere).
        channels_last: NHWC memory layout for the convolutions (same results, faster kernels).
        compile: ``torch.compile`` the model at start-up (slower start, faster steady state).
        cuda_graphs: On CUDA, capture the forward pass once for ``batcher.max_batch_size`` and
            replay it (partial batches are padded), removing per-kernel launch overhead.
    """

    checkpoint: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    warmup_batches: int = Field(default=2, ge=0)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False


class KafkaSinkConfig(_Frozen):
    """Results (and dead letters) to Kafka; topics and connection in ``kafka``.

    Attributes:
        enabled: Publish results to ``kafka.results_topic``.
    """

    enabled: bool = True


class JsonlSinkConfig(_Frozen):
    """Results appended to a JSON-lines file.

    Attributes:
        path: File to append to; ``None`` disables.
    """

    path: Path | None = None


class OverlaySinkConfig(_Frozen):
    """Heat-map overlays of anomalous frames saved to a folder, bounded.

    Attributes:
        directory: Folder; ``None`` disables.
        max_files: Oldest files are deleted beyond this count.
        max_bytes: ...or beyond this total size.
    """

    directory: Path | None = None
    max_files: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)


class SinksConfig(_Frozen):
    """Where results go."""

    kafka: KafkaSinkConfig = KafkaSinkConfig()
    jsonl: JsonlSinkConfig = JsonlSinkConfig()
    overlays: OverlaySinkConfig = OverlaySinkConfig()


class HttpConfig(_Frozen):
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port.

    Attributes:
        host: Listen address.
        port: Listen port (0: any free port).
    """

    host: str = "0.0.0.0"  # all interfaces: a daemon in a container must be scrapeable
    port: int = Field(default=9108, ge=0, le=65535)


class DaemonConfig(_Frozen):
    """Lifecycle.

    Attributes:
        drain_timeout_s: On SIGTERM, how long shutdown may take in all: in-flight frames,
            flushing the sinks, committing and closing share this one deadline.
        stall_timeout_s: Frames in flight and nothing delivered for this long: ``/readyz``
            answers 503 ("delivery stalled"), whatever the connections say.
    """

    drain_timeout_s: float = Field(default=30.0, gt=0)
    stall_timeout_s: float = Field(default=60.0, gt=0)


class MetricsConfig(_Frozen):
    """Bounds on metric labels.

    Attributes:
        cameras: Camera ids that always get a ``camera`` label of their own (besides the ids of
            configured camera and directory sources).
        max_camera_labels: Further camera ids (from Kafka headers or keys) labelled as
            themselves, first come first served; the rest are counted as ``other``.
    """

    cameras: tuple[str, ...] = ()
    max_camera_labels: int = Field(default=64, ge=0)


class InspectorConfig(BaseSettings):
    """The daemon's whole configuration: YAML file, then ``INSPECTOR_SECTION__KEY`` overrides."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="INSPECTOR_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    kafka: KafkaConfig = KafkaConfig()
    sources: tuple[SourceConfig, ...] = (KafkaSourceConfig(),)
    batcher: BatcherConfig = BatcherConfig()
    model: WorkerConfig = WorkerConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    sinks: SinksConfig = SinksConfig()
    http: HttpConfig = HttpConfig()
    daemon: DaemonConfig = DaemonConfig()
    metrics: MetricsConfig = MetricsConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides win over the YAML file (passed as init values)."""
        if not _ENVIRONMENT_APPLIES.get():
            return (init_settings,)
        return env_settings, init_settings


#: Off while :func:`explicit_config` builds a configuration.
_ENVIRONMENT_APPLIES: ContextVar[bool] = ContextVar("inspector_env_applies", default=True)


def explicit_config(values: dict[str, Any]) -> InspectorConfig:
    """A configuration from ``values`` alone, ignoring ``INSPECTOR_*`` variables.

    For programs that build a daemon's configuration themselves (``inspector demo``,
    ``inspector bench``): their broker, topics and checkpoint must not be replaced by whatever
    the shell exports, as a deployed daemon's are.
    """
    token = _ENVIRONMENT_APPLIES.set(False)
    try:
        return InspectorConfig.model_validate(values)
    finally:
        _ENVIRONMENT_APPLIES.reset(token)


def load_config(path: Path | None) -> InspectorConfig:
    """Read a YAML config file and apply environment overrides.

    Args:
        path: YAML file; ``None`` for defaults plus environment.

    Returns:
        The validated, frozen configuration.

    Raises:
        pydantic.ValidationError: A wrong key or value (the CLI turns it into exit code 2 with
            the key path).
        OSError: The file cannot be read.
        yaml.YAMLError: The file is not YAML.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    return InspectorConfig(**data)

"""The daemon's configuration: one frozen pydantic root with a sub-model per stage.

A leaf of the runtime: stages import it, it imports no stage. The sources' and the sinks'
sections live in :mod:`inspector.runtime.config_sources` and :mod:`inspector.runtime.config_sinks`;
their names are re-exported here, where the rest of inspector imports them from.

A key that moved to another section is still read at its old place, with a warning in the log
(:data:`MOVED_KEYS`), so that existing configuration files keep working.
"""

from __future__ import annotations

import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from inspector.model.config import Frozen

# Re-exported: the sections' models are imported from here.
from inspector.runtime.config_genicam import GenicamSourceConfig as GenicamSourceConfig
from inspector.runtime.config_sinks import JsonlSinkConfig as JsonlSinkConfig
from inspector.runtime.config_sinks import KafkaSinkConfig as KafkaSinkConfig
from inspector.runtime.config_sinks import MqttSinkConfig as MqttSinkConfig
from inspector.runtime.config_sinks import MqttTlsConfig as MqttTlsConfig
from inspector.runtime.config_sinks import OpcuaSinkConfig as OpcuaSinkConfig
from inspector.runtime.config_sinks import OverlaySinkConfig as OverlaySinkConfig
from inspector.runtime.config_sinks import SinksConfig as SinksConfig
from inspector.runtime.config_sources import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from inspector.runtime.config_sources import CameraSourceConfig as CameraSourceConfig
from inspector.runtime.config_sources import DirectorySourceConfig as DirectorySourceConfig
from inspector.runtime.config_sources import KafkaSourceConfig as KafkaSourceConfig
from inspector.runtime.config_sources import SourceConfig as SourceConfig
from inspector.runtime.ids import Id
from inspector.runtime.recipes import CameraRecipe
from inspector.runtime.retention.config import RetentionConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT_BYTES = 2 * 1024**3  #: Default of ``admission.max_in_flight_bytes``.


class PostprocessConfig(Frozen):
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


class KafkaConfig(Frozen):
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
        labels_topic: Operators' labels of retained frames (``inspector.label/v1`` JSON, key =
            camera id), published when ``sinks.kafka.enabled``.
        group_id: Consumer group; replicas in one group split the partitions.
        max_message_bytes: Largest frame accepted and largest result produced; larger frames
            are dead-lettered.
        session_timeout_ms: Group session timeout (6000 is Kafka's minimum and joins fastest).
        heartbeat_interval_ms: Group heartbeat interval.
        commit_interval_ms: How often acknowledged offsets are committed.
        compression: Producer compression codec.
        linger_ms: Producer batching delay.
        request_timeout_ms: Producer/consumer request timeout.
        publish_stall_ms: A result or dead letter the broker has not confirmed for this long
            makes ``/readyz`` 503 with the topic (e.g. its partition has no leader); the
            client keeps retrying and the frame stays uncommitted meanwhile.
        revoke_drain_ms: When a rebalance takes partitions away, wait up to this long for
            their frames in flight to be delivered before committing and giving them up, so
            the next owner does not inspect them again (the group waits meanwhile; 0: commit
            what is delivered at once).
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
    labels_topic: str = "inspector.labels"
    group_id: str = "inspector"
    max_message_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    commit_interval_ms: int = Field(default=1_000, ge=10)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    linger_ms: int = Field(default=5, ge=0)
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    publish_stall_ms: int = Field(default=10_000, ge=100)
    revoke_drain_ms: int = Field(default=3_000, ge=0)

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


class BatcherConfig(Frozen):
    """Micro-batching between sources and the model.

    Attributes:
        max_batch_size: Frames per inference batch at most.
        max_wait_ms: Longest wait for a batch to fill once its first frame arrived.
        queue_size: Capacity of each bounded queue between stages.
    """

    max_batch_size: int = Field(default=8, ge=1)
    max_wait_ms: float = Field(default=20.0, ge=0)
    queue_size: int = Field(default=64, ge=1)


class AdmissionConfig(Frozen):
    """How much the pipeline holds at once (:mod:`inspector.runtime.admission`).

    Attributes:
        max_in_flight_bytes: Decoded frame bytes admitted and not yet delivered, at most;
            sources wait (Kafka pauses its partitions) beyond it. One frame is always let in,
            so a frame larger than the budget still runs, alone. Formerly
            ``batcher.max_in_flight_bytes``, which is still read (with a warning).
    """

    max_in_flight_bytes: int = Field(default=DEFAULT_MAX_IN_FLIGHT_BYTES, ge=1)


def _default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/inspector`` (``~/.cache/inspector``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inspector"


class ModelConfig(Frozen):
    """The ``model`` section: which checkpoint the daemon serves, and how it runs it.

    Attributes:
        checkpoint: Checkpoint file written by ``inspector train`` or ``import-anomalib``; with
            ``backend`` openvino or onnxruntime, a folder written by ``inspector export``.
        backend: ``torch`` (a checkpoint on PyTorch's fast path), ``openvino`` or
            ``onnxruntime`` (an exported graph on the CPU; optional extras of the same names).
            Exports carry their precision (fp32 or int8); the switches below are torch's.
        device: ``auto`` uses CUDA when available.
        warmup_batches: Batches run on start-up before reporting ready.
        precision: ``auto`` (default: at start and on reload, fp32, bf16 and, when the
            checkpoint has an int8 record, int8 are timed at ``batcher.max_batch_size`` on this
            machine and the fastest that passes its accuracy guard serves; cached in
            ``auto_cache_dir``; :mod:`inspector.backends.auto`), ``fp32`` (maps as in
            training), ``bf16`` (autocast; anomaly maps still computed in fp32) or ``int8``
            (the checkpoint's guarded int8 variant from ``inspector quantize``, on OpenVINO).
        auto_cache_dir: Where ``precision: auto`` keeps its choice per checkpoint and machine
            (default ``$XDG_CACHE_HOME/inspector``), so a restart does not measure again.
        channels_last: NHWC memory layout for the convolutions (same results, faster kernels).
        compile: ``torch.compile`` the model at start-up (slower start, faster steady state).
        cuda_graphs: On CUDA, capture the forward pass once for ``batcher.max_batch_size`` and
            replay it (partial batches are padded), removing per-kernel launch overhead.
    """

    checkpoint: Path | None = None
    backend: Literal["torch", "openvino", "onnxruntime"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    auto_cache_dir: Path | None = Field(default_factory=_default_cache_dir)
    warmup_batches: int = Field(default=2, ge=0)
    precision: Literal["fp32", "bf16", "int8", "auto"] = "auto"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False


class HttpConfig(Frozen):
    """``/metrics``, ``/healthz``, ``/readyz`` and the control API (``/v1/``) on one port.

    Attributes:
        host: Listen address.
        port: Listen port (0: any free port).
        admin_token: Bearer token for the control API's writes; ``None``: the API is off
            (``/v1/`` answers 404). Set it from the environment (``INSPECTOR_HTTP__ADMIN_TOKEN``),
            never in a YAML file that others read. Unless ``daemon.keep_open`` says otherwise,
            the daemon then runs until told to stop, even once its sources run dry.
        read_token: When set, the operator console's data and every read of retained results
            and images need ``Authorization: Bearer`` with it (or with ``admin_token``);
            ``None``: they are open like ``/metrics``. From the environment
            (``INSPECTOR_HTTP__READ_TOKEN``) too.
    """

    host: str = "0.0.0.0"  # all interfaces: a daemon in a container must be scrapeable
    port: int = Field(default=9108, ge=0, le=65535)
    admin_token: SecretStr | None = Field(default=None, min_length=16)
    read_token: SecretStr | None = Field(default=None, min_length=16)


class DaemonConfig(Frozen):
    """Lifecycle.

    Attributes:
        drain_timeout_s: On SIGTERM, how long shutdown may take in all: in-flight frames,
            flushing the sinks, committing and closing share this one deadline.
        stall_timeout_s: Frames in flight and nothing delivered for this long: ``/readyz``
            answers 503 ("delivery stalled"), whatever the connections say.
        state_path: File where control API changes are saved; on start, its sources (when
            it exists) replace the YAML file's, so a restart comes back as the line was.
        keep_open: Keep running when every source has run dry or was removed, until told to
            stop (SIGTERM), so that sources can be added through the control API; ``false``:
            the daemon finishes then, once their frames are delivered. ``None`` (unset): on
            exactly when the control API is on (``http.admin_token`` set). The daemon logs
            which applies when it starts (:meth:`InspectorConfig.keeps_open`).
    """

    drain_timeout_s: float = Field(default=30.0, gt=0)
    stall_timeout_s: float = Field(default=60.0, gt=0)
    state_path: Path | None = None
    keep_open: bool | None = None


class MetricsConfig(Frozen):
    """Bounds on metric labels.

    Attributes:
        cameras: Camera ids that always get a ``camera`` label of their own (besides the ids of
            configured camera and directory sources).
        max_camera_labels: Further camera ids (from Kafka headers or keys) labelled as
            themselves, first come first served; the rest are counted as ``other``.
    """

    cameras: tuple[Id, ...] = ()
    max_camera_labels: int = Field(default=64, ge=0)


class InspectorConfig(BaseSettings):
    """The daemon's whole configuration: YAML file, then ``INSPECTOR_SECTION__KEY`` overrides.

    ``cameras`` maps a camera id to its recipe (:class:`~inspector.runtime.recipes.
    CameraRecipe`); the key ``"*"`` applies to cameras without one. ``models`` maps a name to a
    checkpoint served besides ``model.checkpoint`` (as ``POST /v1/models`` adds one), for the
    recipes that name it, e.g. a high-resolution camera's tiled model. Camera ids, model names
    and recipe keys follow the one id rule (:data:`inspector.runtime.ids.Id`).
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="INSPECTOR_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        allow_inf_nan=False,  # as every Frozen section (inspector.model.config.Frozen)
    )

    kafka: KafkaConfig = KafkaConfig()
    sources: tuple[SourceConfig, ...] = (KafkaSourceConfig(),)
    batcher: BatcherConfig = BatcherConfig()
    admission: AdmissionConfig = AdmissionConfig()
    model: ModelConfig = ModelConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    sinks: SinksConfig = SinksConfig()
    http: HttpConfig = HttpConfig()
    daemon: DaemonConfig = DaemonConfig()
    metrics: MetricsConfig = MetricsConfig()
    retention: RetentionConfig = RetentionConfig()
    models: dict[Id, Path] = {}
    cameras: dict[Id, CameraRecipe] = {}

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        return read_moved_keys(data)

    @model_validator(mode="after")
    def _camera_ids_unique(self) -> InspectorConfig:
        # A source runs (and is addressed by the control API) under its camera id.
        ids = [s.camera_id for s in self.sources if not isinstance(s, KafkaSourceConfig)]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"sources: camera_id {', '.join(repeated)} used by several sources")
        return self

    def keeps_open(self) -> tuple[bool, str]:
        """``daemon.keep_open``, or unset whether the control API is on; and which applied."""
        if self.daemon.keep_open is not None:
            return self.daemon.keep_open, "daemon.keep_open"
        if self.http.admin_token is not None:
            return True, "daemon.keep_open unset and the control API on (http.admin_token)"
        return False, "daemon.keep_open unset and the control API off"

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


#: Keys that moved, ``(section, key)`` where they were to the section they are in now.
MOVED_KEYS: dict[tuple[str, str], str] = {("batcher", "max_in_flight_bytes"): "admission"}


def read_moved_keys(data: Any) -> Any:
    """``data`` (the root's raw values) with each moved key taken to its new section.

    A moved key is logged as deprecated. Given at both places with different values, it is an
    error: the environment and the file are merged by then, so which was meant is unknown.
    """
    if not isinstance(data, dict):
        return data
    for (old, key), new in MOVED_KEYS.items():
        section, target = data.get(old), data.get(new, {})
        if not isinstance(section, dict) or key not in section or not isinstance(target, dict):
            continue
        value = section[key]
        if key in target and target[key] != value:
            raise ValueError(f"{old}.{key} is {new}.{key} now: give only {new}.{key}")
        log.warning("config: %s.%s is deprecated; read as %s.%s (rename it)", old, key, new, key)
        rest = {k: v for k, v in section.items() if k != key}
        data = {**data, old: rest, new: {**target, key: value}}
    return data


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
        # From the open file, so that a syntax error names it (not "<unicode string>").
        with path.open(encoding="utf-8") as stream:
            loaded = yaml.safe_load(stream)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    return InspectorConfig(**data)

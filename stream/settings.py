"""Every setting of the running system, read in one place: defaults < TOML file < environment.

Environment variables are ``MIRAGE_<FIELD>`` upper-cased (``MIRAGE_BOOTSTRAP_SERVERS``,
``MIRAGE_REDIS_URL``, ...). A TOML file is given with ``MIRAGE_CONFIG=path`` or ``--config``;
its keys are the field names. Secrets (``sasl_password``, ``redis_password``) may also come from
files (``MIRAGE_SASL_PASSWORD_FILE``) and are never printed: ``Settings.redacted()`` masks them.
Defaults work with the embedded services started by ``mirage up``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import tomllib

from stream.errors import SettingsError

SECRET_FIELDS = ("sasl_password", "redis_password", "dashboard_token")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")


@dataclass(frozen=True)
class Settings:
    """Settings of workers, replay, dashboard and bridges. All fields have working defaults."""

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # secret: never in repr() or logs
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    topic_chunks: str = "mirage.ecg.chunks"
    topic_labs: str = "mirage.labs"
    topic_alerts: str = "mirage.alerts"
    topic_deadletter: str = "mirage.deadletter"
    topic_acks: str = "mirage.acks"
    consumer_group: str = "mirage-worker"
    session_timeout_s: float = 6.0
    # How long the broker may hold a fetch with no new data. Kafka answers at once when data is there;
    # Tansu (the embedded broker) holds fetches, and each fetch costs it time that grows with what it
    # stores: at 200 beds it averaged 45-53 % of a core with 20 ms and 29-41 % with 100 ms, for a p50 of
    # 162-290 ms instead of 140-162 ms (docs/BENCHMARKS.md, "night" section). faust's own default is 1500.
    fetch_max_wait_ms: int = 100
    # The broker answers a worker's fetch once it holds this many new bytes (or fetch_max_wait_ms
    # has passed): 1 = at once with whatever is there (one ~6 KB chunk per fetch under load).
    fetch_min_bytes: int = 1
    max_message_bytes: int = 4 * 1024 * 1024
    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = field(default="", repr=False)  # secret: never in repr() or logs
    redis_ssl: bool = False
    lab_staleness_s: float = 24 * 3600.0
    # model / inference
    checkpoint: str = ""  # empty = the shipped default checkpoint
    backend: str = "torch"  # torch | onnxruntime | onnxruntime-opt | onnxruntime-int8-static | onnxruntime-int8 | tensorrt | torch-compile
    fallback_backend: str = ""  # used if the primary backend fails (e.g. GPU lost)
    device: str = "cpu"
    threads: int = 0  # intra-op CPU threads of the model backend (0 = the backend's default: all cores)
    # Windows per model call. A call's micro-batches are pipelined (the next one is converted while
    # the model scores this one): a backlog of 64 windows is scored in ~300 ms at 16, ~450 ms as
    # one batch of 64 (int8-static, 1 thread; docs/BENCHMARKS.md). GPU backends may want more.
    max_batch: int = 16
    max_wait_ms: int = 50
    hop_s: float = 0.0  # 0 = the checkpoint's hop
    # alert policy (thresholds 0 = from the checkpoint)
    threshold_start: float = 0.0
    threshold_end: float = 0.0
    k_of_n_k: int = 2
    k_of_n_n: int = 3
    cooldown_s: float = 60.0
    escalate_probability: float = 0.9
    # technical alarms / admission
    no_data_s: float = 10.0
    poor_quality_s: float = 20.0
    idle_discharge_s: float = 300.0
    behind_s: float = 10.0
    # ST monitoring (issue #19; defaults as engine.st: AHA practice standards, 1 mm for 60 s)
    st_enabled: bool = True
    st_threshold_uv: float = 100.0  # st_change starts at this change from baseline in 2 contiguous leads ...
    st_sustain_s: float = 60.0  # ... held this long
    st_end_uv: float = 75.0  # ends when no contiguous pair deviates by this ...
    st_end_s: float = 30.0  # ... for this long (hysteresis)
    st_escalate_uv: float = 200.0  # level 2 at this change
    st_learn_s: float = 120.0  # baseline: the first clean minutes after admission
    st_min_windows: int = 10  # measurable windows a lead needs for its baseline
    # service endpoints (loopback by default)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = disabled
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8080
    dashboard_token: str = field(default="", repr=False)  # secret: never in repr() or logs

    def __post_init__(self) -> None:
        # A misspelt protocol must fail loudly: faust and aiokafka read it differently, and one of
        # them silently falling back to PLAINTEXT would send credentials and ECG unencrypted.
        proto = str(self.security_protocol).strip().upper()
        if proto not in SECURITY_PROTOCOLS:
            raise SettingsError(f"security_protocol={self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        mech = str(self.sasl_mechanism).strip().upper()
        if mech not in SASL_MECHANISMS:
            raise SettingsError(f"sasl_mechanism={self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}")
        if int(self.threads) < 0:
            raise SettingsError(f"threads={self.threads!r} must be >= 0 (0 = the backend's default)")
        object.__setattr__(self, "security_protocol", proto)
        object.__setattr__(self, "sasl_mechanism", mech)

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then the TOML file (``path`` or $MIRAGE_CONFIG), then $MIRAGE_* variables, then overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get("MIRAGE_CONFIG")
        if path:
            p = Path(path)
            try:
                data = tomllib.loads(p.read_text())
            except FileNotFoundError:
                raise SettingsError(f"settings file {p} does not exist") from None
            except OSError as exc:  # a directory, no permission, an I/O error
                raise SettingsError(f"settings file {p} cannot be read: {exc.strerror or exc}") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise SettingsError(f"settings file {p} is not valid TOML: {exc}") from None
            for key, value in data.items():
                values[key] = cls._coerce(key, value, f"{p}")
        for f in fields(cls):
            key = f"MIRAGE_{f.name.upper()}"
            if key in env:
                values[f.name] = cls._coerce(f.name, env[key], f"${key}")
            file_key = f"{key}_FILE"
            if f.name in SECRET_FIELDS and file_key in env:
                try:
                    values[f.name] = Path(env[file_key]).read_text().strip()
                except OSError as exc:
                    raise SettingsError(f"${file_key}: cannot read secret file: {exc.strerror}") from None
        for key, value in overrides.items():
            if value is not None:
                values[key] = cls._coerce(key, value, "override")
        return cls(**values)

    @classmethod
    def _coerce(cls, key: str, value: Any, where: str) -> Any:
        types = {f.name: f.type for f in fields(cls)}
        if key not in types:
            raise SettingsError(f"{where}: unknown setting {key!r}")
        t = types[key]
        try:
            if t == "bool":
                if isinstance(value, bool):
                    return value
                s = str(value).strip().lower()
                if s in ("1", "true", "yes", "on"):
                    return True
                if s in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            if t == "int":
                return int(value)
            if t == "float":
                return float(value)
            return str(value)
        except (TypeError, ValueError):
            shown = "***" if key in SECRET_FIELDS else repr(value)
            raise SettingsError(f"{where}: setting {key}={shown} is not a valid {t}") from None

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in self.redacted().items()) + ")"

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict with secrets masked, safe to log or print."""
        d = dataclasses.asdict(self)
        for k in SECRET_FIELDS:
            if d.get(k):
                d[k] = "***"
        for k, v in d.items():  # a password inside a URL (redis://:pw@host) is a secret too
            if isinstance(v, str) and "://" in v and "@" in v:
                scheme, _, rest = v.partition("://")
                userinfo, _, host = rest.rpartition("@")
                if userinfo:
                    d[k] = f"{scheme}://{userinfo.split(':', 1)[0] + ':' if ':' in userinfo else ''}***@{host}"
        return d

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka producers/consumers/admin (security settings)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile or None, certfile=self.ssl_certfile or None,
                                                   keyfile=self.ssl_keyfile or None)
        if self.security_protocol.startswith("SASL"):
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password)
        return kw

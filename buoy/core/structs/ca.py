"""The mesh CA's objects: its configuration (``CAConfiguration``, whose ``Config`` holds the ``consul``
provider's settings with their defaults, Consul's decoding of a PUT and Consul's validation) and its roots
(``IndexedCARoots``, never with a private key). Key sizes are plain bit counts here;
which curve a size means is :mod:`buoy.connect.ca`'s business."""

from __future__ import annotations

import math
from typing import Any

from buoy.core.decode import DecodeFailed, Fields
from buoy.core.errors import Failed
from buoy.durations import format_duration, parse_duration

PROVIDER = "consul"
DEFAULT_CONFIG: dict[str, Any] = {
    "LeafCertTTL": "72h",
    "IntermediateCertTTL": "8760h",
    "RootCertTTL": "87600h",
    "RotationPeriod": "2160h",
    "PrivateKeyType": "ec",
    "PrivateKeyBits": 256,
    "CSRMaxPerSecond": 50,
}
DURATIONS = ("LeafCertTTL", "IntermediateCertTTL", "RootCertTTL", "RotationPeriod")
# Changing one of these needs a new key, so it rotates the root.
ROTATING = ("PrivateKeyType", "PrivateKeyBits", "RotationPeriod")
# Consul refuses leaves shorter than an hour. Buoy goes down to 10 s so that renewal can be watched in
# tests and demos; production settings should stay in hours.
MIN_LEAF_TTL = 10.0
MAX_LEAF_TTL = 365 * 86400.0
MIN_INTERMEDIATE_TTL = 3 * 3600.0
MAX_DURATION = (2**63 - 1) / 1e9  # Go's time.Duration, about 292 years
EC_BITS = (224, 256, 384, 521)
RSA_BITS = (2048, 4096)

# A root as /v1/connect/ca/roots shows it: the stored row less RotatedOutAt, which is Buoy's own bookkeeping.
ROOT_FIELDS = ("ID", "Name", "SerialNumber", "SigningKeyID", "ExternalTrustDomain", "NotBefore", "NotAfter",
               "RootCert", "IntermediateCerts", "Active", "PrivateKeyType", "PrivateKeyBits", "CreateIndex",
               "ModifyIndex")

_CANONICAL = {name.lower(): name for name in (*DEFAULT_CONFIG, "PrivateKey", "RootCert")}


def config_error(reason: str) -> Failed:
    return Failed(f"error configuring provider: {reason}")


def parse_config(raw: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The provider configuration of a PUT: every setting with its default filled in (keys matched the way
    Consul's decoder matches them, so ``csr_max_per_second`` is ``CSRMaxPerSecond``), plus the
    ``PrivateKey`` and ``RootCert`` it brings, which are used once and never stored in the configuration.
    Settings Buoy does not know are kept as given, as Consul keeps them."""
    given = {_CANONICAL.get(str(k).lower().replace("_", ""), str(k)): v for k, v in raw.items() if v is not None}
    private_key, root_cert = given.pop("PrivateKey", ""), given.pop("RootCert", "")
    if not isinstance(private_key, str) or not isinstance(root_cert, str):
        raise config_error("error decoding config: PrivateKey and RootCert must be PEM strings")
    if root_cert and not private_key:
        raise config_error("must provide a private key when providing a root cert")
    config = dict(DEFAULT_CONFIG, **given)
    for name in DURATIONS:
        value = config[name]
        try:
            # A JSON number is a Go time.Duration: nanoseconds.
            if isinstance(value, int | float) and not isinstance(value, bool):
                config[name] = format_duration(value / 1e9)
            if not abs(parse_duration(config[name])) <= MAX_DURATION:  # NaN fails this too
                raise ValueError
        except (TypeError, ValueError, AttributeError, OverflowError):
            raise config_error(f"error decoding config: '{name}': time: invalid duration {value!r}") from None
    config["PrivateKeyType"] = str(config["PrivateKeyType"])
    config["PrivateKeyBits"] = _number(config, "PrivateKeyBits", int)
    config["CSRMaxPerSecond"] = _number(config, "CSRMaxPerSecond", float)
    if config["CSRMaxPerSecond"] < 0:
        raise config_error("CSRMaxPerSecond must not be negative")
    _validate(config)
    return config, private_key, root_cert


def _number(config: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    value = config[name]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError):
        raise config_error(f"error decoding config: '{name}': expected a number, got {value!r}") from None
    # Keep integers integral so the configuration reads back the way it was written.
    return int(number) if number == int(number) else number


def seconds(config: dict[str, Any], name: str) -> float:
    return parse_duration(config[name])


def _validate(config: dict[str, Any]) -> None:
    """Consul's checks (CommonCAProviderConfig.Validate), with Buoy's shorter minimum leaf TTL."""
    leaf, inter, root = (seconds(config, n) for n in ("LeafCertTTL", "IntermediateCertTTL", "RootCertTTL"))
    if root < inter:
        raise config_error("root cert TTL is set and is not greater than intermediate cert ttl. root cert ttl: "
                            f"{config['RootCertTTL']}, intermediate cert ttl: {config['IntermediateCertTTL']}")
    if leaf < MIN_LEAF_TTL:
        raise config_error(f"leaf cert TTL must be greater or equal than {format_duration(MIN_LEAF_TTL)}")
    if leaf > MAX_LEAF_TTL:
        raise config_error(f"leaf cert TTL must be less than {format_duration(MAX_LEAF_TTL)}")
    if inter < MIN_INTERMEDIATE_TTL:
        raise config_error("Intermediate Cert TTL must be greater or equal than 3h")
    if inter < 3 * leaf:
        raise config_error(f"Intermediate Cert TTL must be greater or equal than 3 * LeafCertTTL "
                            f"(>={format_duration(3 * leaf)}).")
    key_type, bits = config["PrivateKeyType"], config["PrivateKeyBits"]
    if key_type == "ec" and bits not in EC_BITS:
        raise config_error("EC key length must be one of (224, 256, 384, 521) bits")
    if key_type == "rsa" and bits not in RSA_BITS:
        raise config_error("RSA key length must be 2048 or 4096 bits")
    if key_type not in ("ec", "rsa"):
        raise config_error("private key type must be either 'ec' or 'rsa'")


def rotates(old: dict[str, Any], new: dict[str, Any]) -> bool:
    for name in ROTATING:
        before, after = old.get(name), new[name]
        if name in DURATIONS:
            before, after = parse_duration(before or "0"), parse_duration(after)
        if before != after:
            return True
    return False


def decode_configuration(body: Any) -> tuple[str, dict[str, Any], bool, Any]:
    """A PUT /v1/connect/ca/configuration body: the provider, its raw Config, ForceWithoutCrossSigning and
    the (read-only) State it names, for :meth:`buoy.server.ca.CAManager.configure`."""
    f = Fields(body, "CAConfiguration")
    state = f.raw("State")
    if state is not None and not isinstance(state, dict):
        raise DecodeFailed("CAConfiguration.State: expected an object of strings")
    return f.str("Provider"), f.obj("Config") or {}, f.bool("ForceWithoutCrossSigning"), state


def config_to_api(doc: dict[str, Any]) -> dict[str, Any]:
    """The stored configuration as Consul's CAConfiguration (its provider State is never shown)."""
    return {
        "Provider": doc["Provider"], "Config": doc["Config"], "State": None,
        "ForceWithoutCrossSigning": doc["ForceWithoutCrossSigning"],
        "CreateIndex": doc["CreateIndex"], "ModifyIndex": doc["ModifyIndex"],
    }


def roots_to_api(view: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The trust domain and the root rows as Consul's IndexedCARoots."""
    trust_domain, roots = view
    active = next((r for r in roots if r["Active"]), None)
    return {
        "ActiveRootID": active["ID"] if active else "",
        "TrustDomain": trust_domain,
        "Roots": [dict({f: r[f] for f in ROOT_FIELDS}, IntermediateCerts=r["IntermediateCerts"] or None)
                  for r in roots],
    }

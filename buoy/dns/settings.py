"""The DNS interface's settings, taken once from the agent's Config into the shapes the hot path wants."""

from __future__ import annotations

from dataclasses import dataclass

from buoy.api.client import Consistency
from buoy.config import Config, recursor_address


def domain_labels(domain: str) -> tuple[bytes, ...]:
    """``"Consul."`` -> ``(b"consul",)``: the labels of a domain, folded to lower case as DNS compares them."""
    return tuple(label.encode() for label in domain.lower().strip(".").split(".") if label)


@dataclass(frozen=True)
class Settings:
    datacenter: str
    domain: tuple[bytes, ...]
    alt_domain: tuple[bytes, ...]  # () when there is none
    recursors: tuple[tuple[str, int], ...]
    recursor_timeout: float
    recursor_random: bool
    allow_stale: bool
    max_stale: float
    node_ttl: int
    service_ttls: dict[str, int]  # exact service names
    prefix_ttls: tuple[tuple[str, int], ...]  # "web*" -> ("web", ttl), longest prefix first; "*" is ""
    enable_truncate: bool
    only_passing: bool
    a_record_limit: int
    udp_answer_limit: int
    node_meta_txt: bool
    soa_expire: int
    soa_min_ttl: int
    soa_refresh: int
    soa_retry: int

    @classmethod
    def from_config(cls, cfg: Config) -> Settings:
        exact = {k.lower(): int(v) for k, v in cfg.dns_service_ttl.items() if not k.endswith("*")}
        prefixes = sorted(((k[:-1].lower(), int(v)) for k, v in cfg.dns_service_ttl.items() if k.endswith("*")),
                          key=lambda kv: -len(kv[0]))
        return cls(
            datacenter=cfg.datacenter,
            domain=domain_labels(cfg.domain),
            alt_domain=domain_labels(cfg.alt_domain),
            recursors=tuple(recursor_address(r) for r in cfg.recursors),
            recursor_timeout=cfg.dns_recursor_timeout,
            recursor_random=cfg.dns_recursor_strategy == "random",
            allow_stale=cfg.dns_allow_stale,
            max_stale=cfg.dns_max_stale,
            node_ttl=int(cfg.dns_node_ttl),
            service_ttls=exact,
            prefix_ttls=tuple(prefixes),
            enable_truncate=cfg.dns_enable_truncate,
            only_passing=cfg.dns_only_passing,
            a_record_limit=cfg.dns_a_record_limit,
            udp_answer_limit=cfg.dns_udp_answer_limit,
            node_meta_txt=cfg.dns_node_meta_txt,
            soa_expire=cfg.dns_soa_expire,
            soa_min_ttl=cfg.dns_soa_min_ttl,
            soa_refresh=cfg.dns_soa_refresh,
            soa_retry=cfg.dns_soa_retry,
        )

    @property
    def consistency(self) -> Consistency:
        """How views read: stale (any server answers from its own state) unless allow_stale is off."""
        return "stale" if self.allow_stale else "default"

    def service_ttl(self, service: str) -> int:
        """Consul's rule: an exact name wins over the longest matching ``prefix*`` (``*`` matches all)."""
        name = service.lower()
        if name in self.service_ttls:
            return self.service_ttls[name]
        for prefix, ttl in self.prefix_ttls:
            if name.startswith(prefix):
                return ttl
        return 0

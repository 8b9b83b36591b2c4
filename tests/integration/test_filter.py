"""`?filter=` expressions on catalog and health reads, and their errors."""

from __future__ import annotations

import requests


def _setup(c) -> None:
    for i, (tags, env, status) in enumerate([(["v1"], "prod", "passing"), (["v2"], "dev", "critical"),
                                             (["v1", "canary"], "prod", "warning")]):
        c.catalog.register(f"flt-n{i}", f"10.9.0.{i}",
                           service={"Service": "flt", "ID": f"flt-{i}", "Port": 9000 + i, "Tags": tags,
                                    "Meta": {"env": env}},
                           check={"CheckID": f"flt-{i}-c", "Name": "c", "Status": status, "ServiceID": f"flt-{i}"})


def test_filter_catalog_and_health(dev_agent, base, c) -> None:
    _setup(c)

    def ids(path: str, expr: str) -> list[str]:
        r = requests.get(f"{base}{path}", params={"filter": expr}, timeout=5)
        assert r.status_code == 200, r.text
        return [x.get("ServiceID") or x["Service"]["ID"] for x in r.json()]

    assert ids("/v1/catalog/service/flt", 'ServiceMeta.env == "prod"') == ["flt-0", "flt-2"]
    assert ids("/v1/catalog/service/flt", "v1 in ServiceTags and not (canary in ServiceTags)") == ["flt-0"]
    assert ids("/v1/catalog/service/flt", "ServicePort == 9001 or ServiceTags contains canary") == ["flt-1", "flt-2"]
    assert ids("/v1/health/service/flt", 'Service.Meta.env != prod') == ["flt-1"]
    # A selector through a list of objects yields the list of their fields.
    assert ids("/v1/health/service/flt", "Checks.Status contains critical") == ["flt-1"]
    expr = 'ServiceAddress is empty and Node matches "^flt-n[01]$"'
    assert ids("/v1/catalog/service/flt", expr) == ["flt-0", "flt-1"]
    # The dev agent is shared by the session: other tests' services may carry the same tags.
    r = requests.get(f"{base}/v1/catalog/services",
                     params={"filter": "ServiceName == flt and ServiceTags contains canary"}, timeout=5)
    assert r.json() == {"flt": ["v1", "canary"]}
    checks = requests.get(f"{base}/v1/health/state/any", params={"filter": 'ServiceName == flt and Status == warning'},
                          timeout=5).json()
    assert [ch["CheckID"] for ch in checks] == ["flt-2-c"]


def test_bad_filters_are_400(dev_agent, base, c) -> None:
    _setup(c)
    for expr in ("ServiceName ==", "(ServiceName == x", "Nope == 1", "ServiceName matches \"[\""):
        r = requests.get(f"{base}/v1/catalog/service/flt", params={"filter": expr}, timeout=5)
        assert r.status_code == 400, (expr, r.text)
        assert r.headers["Content-Type"].startswith("text/plain")

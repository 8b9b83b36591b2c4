"""The mesh CA with real processes: the root the leader creates, leaves issued by dev, server and client
agents (checked with `cryptography` and `openssl verify`), the leader's CSR checks and rate limit, leaf
renewal waking a blocking query, root rotation with cross-signing, bad configurations, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import consul
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from buoy.api.signed import SIGNATURE_HEADER, request_headers
from tests.integration.cluster import Cluster
from tests.integration.conftest import DevAgent, Run, wait_until

CA_SIGN = "/v1/internal/buoy/ca/sign"
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TEN_YEARS = 87600 * 3600


# ---- helpers ---------------------------------------------------------------------------------------

def get(addr: str, path: str, **params: Any) -> requests.Response:
    resp = requests.get(f"http://{addr}{path}", params=params, timeout=90)
    assert resp.status_code == 200, resp.text
    return resp


def roots(addr: str) -> dict[str, Any]:
    return get(addr, "/v1/connect/ca/roots").json()


def leaf(addr: str, service: str, **params: Any) -> dict[str, Any]:
    return get(addr, f"/v1/agent/connect/ca/leaf/{service}", **params).json()


def active_root(doc: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in doc["Roots"] if r["ID"] == doc["ActiveRootID"])


def certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def verify(chain_pem: str, *root_pems: str) -> str:
    """Verify a leaf (and the intermediates after it) against the given roots only; its SPIFFE ID."""
    leaf_cert, *intermediates = certs(chain_pem)
    store = Store([x509.load_pem_x509_certificate(p.encode()) for p in root_pems])
    verified = PolicyBuilder().store(store).build_client_verifier().verify(leaf_cert, intermediates)
    (uri,) = [s.value for s in verified.subjects if isinstance(s, x509.UniformResourceIdentifier)]
    return uri


def check_leaf(doc: dict[str, Any], service: str, trust_domain: str, root_pem: str) -> None:
    """Consul's LeafCert fields, a chain to the root, the SPIFFE ID, and an EC P-256 key that is the cert's."""
    uri = f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/{service}"
    assert doc["Service"] == service and doc["ServiceURI"] == uri
    assert set(doc) == {"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter",
                        "ValidBefore", "CreateIndex", "ModifyIndex"}
    assert verify(doc["CertPEM"], root_pem) == uri
    cert = certs(doc["CertPEM"])[0]
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2})*", doc["SerialNumber"])
    assert int(doc["SerialNumber"].replace(":", ""), 16) == cert.serial_number
    assert doc["ValidBefore"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {x509.ExtendedKeyUsageOID.CLIENT_AUTH, x509.ExtendedKeyUsageOID.SERVER_AUTH}
    key = serialization.load_pem_private_key(doc["PrivateKeyPEM"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        cert.public_key().public_bytes(serialization.Encoding.DER, spki)


def openssl_verify(tmp_path: Path, root_pem: str, leaf_pem: str, untrusted: str = "") -> str:
    (tmp_path / "root.pem").write_text(root_pem)
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    cmd = ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem")]
    if untrusted:
        (tmp_path / "untrusted.pem").write_text(untrusted)
        cmd += ["-untrusted", str(tmp_path / "untrusted.pem")]
    proc = subprocess.run([*cmd, str(tmp_path / "leaf.pem")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def csr_for(uri: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def sign(cluster: Cluster, i: int, csr: str, service: str, key: bytes | None = None) -> requests.Response:
    """The internal call an agent makes to get a CSR signed, signed with the cluster key."""
    body = json.dumps({"csr": csr, "service": service}).encode()
    secret = base64.b64decode(cluster.key) if key is None else key
    return requests.post(f"http://127.0.0.1:{cluster.http[i]}{CA_SIGN}", data=body,
                         headers=request_headers(secret, "POST", CA_SIGN, body), timeout=30)


def put_configuration(addr: str, body: dict[str, Any]) -> None:
    resp = requests.put(f"http://{addr}/v1/connect/ca/configuration", json=body, timeout=30)
    assert resp.status_code == 200, resp.text


def configure(addr: str, **changes: Any) -> None:
    """Change some settings of the CA configuration, keeping the others."""
    config = get(addr, "/v1/connect/ca/configuration").json()["Config"]
    put_configuration(addr, {"Provider": "consul", "Config": dict(config, **changes)})


# ---- one dev agent ---------------------------------------------------------------------------------

def test_root_after_start(dev_agent: DevAgent, c: consul.Consul) -> None:
    doc = wait_until(lambda: roots(dev_agent.http_addr)["Roots"] and roots(dev_agent.http_addr), "the first root")
    match = re.fullmatch(f"({UUID})\\.consul", doc["TrustDomain"])
    assert match, doc["TrustDomain"]
    root = active_root(doc)
    assert [r["ID"] for r in doc["Roots"] if r["Active"]] == [root["ID"]]
    assert root["Name"] == "Consul CA Root Cert" and root["ExternalTrustDomain"] == match.group(1)
    assert (root["PrivateKeyType"], root["PrivateKeyBits"]) == ("ec", 256)
    cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
    fingerprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest()
    assert root["ID"] == ":".join(f"{b:02x}" for b in fingerprint) and root["SerialNumber"] == cert.serial_number
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{doc['TrustDomain']}"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().key_size == 256
    life = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    assert TEN_YEARS <= life <= TEN_YEARS + 120
    assert "PRIVATE KEY" not in json.dumps(doc)
    # What Consul's clients read: py-consul asks with ?pem=0; the agent serves the same roots.
    assert c.connect.ca.roots() == doc
    assert c.agent.connect.ca.roots() == doc
    bundle = requests.get(f"http://{dev_agent.http_addr}/v1/connect/ca/roots?pem=true", timeout=10)
    assert bundle.headers["Content-Type"].startswith("application/pem-certificate-chain")
    assert bundle.text == "".join(p for r in doc["Roots"] for p in [r["RootCert"], *(r["IntermediateCerts"] or [])])
    config = c.connect.ca.configuration()
    assert config["Provider"] == "consul" and config["State"] is None
    assert {"LeafCertTTL", "RotationPeriod", "PrivateKeyType", "PrivateKeyBits", "CSRMaxPerSecond"} <= set(
        config["Config"])


def test_leaf_from_dev_agent(dev_agent: DevAgent, c: consul.Consul, tmp_path: Path) -> None:
    doc = wait_until(lambda: roots(dev_agent.http_addr)["Roots"] and roots(dev_agent.http_addr), "the first root")
    root = active_root(doc)
    first = leaf(dev_agent.http_addr, "web")
    check_leaf(first, "web", doc["TrustDomain"], root["RootCert"])
    assert "OK" in openssl_verify(tmp_path, root["RootCert"], first["CertPEM"])
    # Cached: the same certificate until it is renewed, also through py-consul.
    assert c.agent.connect.ca.leaf("web") == first
    # A blocking read that nothing renews returns the same leaf when its wait runs out.
    resp = get(dev_agent.http_addr, "/v1/agent/connect/ca/leaf/web", index=first["ModifyIndex"], wait="1s")
    assert resp.json() == first and resp.headers["X-Consul-Index"] == str(first["ModifyIndex"])


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        (b'{"Provider": "consul", "Config": {', 400, "Request decode failed"),
        (b'["consul"]', 400, "expected a JSON object"),
        (b'{"Provider": "consul", "Config": "72h"}', 400, "Config: expected an object"),
        (b'{"Provider": "vault", "Config": {}}', 500, 'unknown CA provider "vault"'),
        (b'{"Config": {}}', 500, 'unknown CA provider ""'),
        (b'{"Provider": "consul", "Config": {"LeafCertTTL": "soon"}}', 500, "invalid duration"),
        (b'{"Provider": "consul", "Config": {"LeafCertTTL": "1s"}}', 500, "leaf cert TTL must be greater or equal"),
        (b'{"Provider": "consul", "Config": {"LeafCertTTL": "9000h"}}', 500, "leaf cert TTL must be less than"),
        (b'{"Provider": "consul", "Config": {"LeafCertTTL": "4000h"}}', 500, "3 * LeafCertTTL"),
        (b'{"Provider": "consul", "Config": {"PrivateKeyBits": 255}}', 500, "EC key length"),
        (b'{"Provider": "consul", "Config": {"PrivateKeyType": "dsa"}}', 500, "private key type"),
        (b'{"Provider": "consul", "Config": {"csr_max_per_second": -1}}', 500, "CSRMaxPerSecond"),
        (b'{"Provider": "consul", "Config": {"RootCert": "x"}}', 500, "must provide a private key"),
        (b'{"Provider": "consul", "Config": {"PrivateKey": "not a key"}}', 500, "error parsing private key"),
        (b'{"Provider": "consul", "Config": {}, "State": {"x": "y"}}', 400, "Provider State is read-only"),
    ],
)
def test_bad_configuration(dev_agent: DevAgent, body: bytes, status: int, text: str) -> None:
    wait_until(lambda: roots(dev_agent.http_addr)["Roots"], "the first root")
    before = get(dev_agent.http_addr, "/v1/connect/ca/configuration").json()
    resp = requests.put(f"http://{dev_agent.http_addr}/v1/connect/ca/configuration", data=body, timeout=10)
    assert resp.status_code == status, resp.text
    assert text in resp.text and resp.text.count("\n") == 1 and "Traceback" not in resp.text
    assert get(dev_agent.http_addr, "/v1/connect/ca/configuration").json() == before


def test_bad_read_parameters(dev_agent: DevAgent) -> None:
    resp = requests.get(f"http://{dev_agent.http_addr}/v1/connect/ca/roots?pem=maybe", timeout=10)
    assert resp.status_code == 400 and "'pem' query parameter must be a boolean" in resp.text
    resp = requests.get(f"http://{dev_agent.http_addr}/v1/agent/connect/ca/leaf/web?index=x", timeout=10)
    assert resp.status_code == 400 and "Invalid index" in resp.text


def test_cli(buoy: Any, tmp_path: Path, dev_agent: DevAgent) -> None:
    wait_until(lambda: roots(dev_agent.http_addr)["Roots"], "the first root")
    shown: Run = buoy("connect", "ca", "get-config")
    assert shown.code == 0, shown
    config = json.loads(shown.out)
    assert list(config) == ["Provider", "Config", "State", "ForceWithoutCrossSigning", "CreateIndex", "ModifyIndex"]
    assert "\n\t\"Provider\": \"consul\"," in shown.out and list(config["Config"]) == sorted(config["Config"])
    # Setting what get-config printed changes nothing (no rotation, no new index).
    (tmp_path / "ca.json").write_text(shown.out)
    assert buoy("connect", "ca", "set-config", "-config-file", str(tmp_path / "ca.json")).out == \
        "Configuration updated!\n"
    assert json.loads(buoy("connect", "ca", "get-config").out) == config
    buoy("connect", "ca", "set-config").assert_one_line_error(1, "The -config-file flag is required")
    (tmp_path / "bad.json").write_text("{nope")
    buoy("connect", "ca", "set-config", "-config-file", str(tmp_path / "bad.json")).assert_one_line_error(1)
    (tmp_path / "vault.json").write_text('{"Provider": "vault", "Config": {}}')
    buoy("connect", "ca", "set-config", f"-config-file={tmp_path / 'vault.json'}").assert_one_line_error(
        1, 'Error setting CA configuration: could not initialize provider: unknown CA provider "vault"')


# ---- a 3-server cluster with a client agent --------------------------------------------------------

@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    cluster = Cluster(tmp_path_factory.mktemp("mesh"))
    cluster.start_all()
    try:
        cluster.wait_leader()
        client = cluster.add_client([0, 1, 2])
        # The client agent answers, through the servers, once the leader has made the first root.
        wait_until(lambda: roots(f"127.0.0.1:{cluster.http[client]}")["Roots"], "the first root", timeout=30)
        yield cluster, client
    finally:
        cluster.stop_all()


def addr(cluster: Cluster, i: int) -> str:
    return f"127.0.0.1:{cluster.http[i]}"


def test_leaf_from_client_agent(mesh: tuple[Cluster, int], tmp_path: Path) -> None:
    cluster, client = mesh
    config = get(addr(cluster, client), "/v1/connect/ca/configuration").json()
    assert config["Config"] == {"LeafCertTTL": "72h", "IntermediateCertTTL": "8760h", "RootCertTTL": "87600h",
                                "RotationPeriod": "2160h", "PrivateKeyType": "ec", "PrivateKeyBits": 256,
                                "CSRMaxPerSecond": 50}
    doc = roots(addr(cluster, 1))
    (root,) = doc["Roots"]
    assert root["Active"] and root["IntermediateCerts"] is None
    got = leaf(addr(cluster, client), "web")
    check_leaf(got, "web", doc["TrustDomain"], root["RootCert"])
    openssl_verify(tmp_path, root["RootCert"], got["CertPEM"])
    # Every server publishes the same roots, and the client agent serves them too.
    assert all(roots(addr(cluster, i)) == doc for i in range(3))
    assert get(addr(cluster, client), "/v1/agent/connect/ca/roots").json() == doc
    # A server agent issues leaves as well (a follower has the leader sign them).
    follower = next(i for i in range(3) if i != cluster.wait_leader())
    check_leaf(leaf(addr(cluster, follower), "api"), "api", doc["TrustDomain"], root["RootCert"])


def test_leader_refuses_bad_csrs(mesh: tuple[Cluster, int]) -> None:
    cluster, _ = mesh
    trust_domain = roots(addr(cluster, 0))["TrustDomain"]
    own = f"spiffe://{trust_domain}/ns/default/dc/dc1/svc"
    leader = cluster.wait_leader()
    follower = next(i for i in range(3) if i != leader)
    for server in (leader, follower):
        ok = sign(cluster, server, csr_for(f"{own}/web"), "web")
        assert ok.status_code == 200 and ok.json()["ServiceURI"] == f"{own}/web", ok.text
        for uri, service, status, text in [
            (f"{own}/db", "web", 403, 'Permission denied: the CSR is for service "db"'),
            ("spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web", "web", 400,
             "SPIFFE ID in CSR from a different trust domain: 11111111-2222-3333-4444-555555555555.consul"),
            (f"spiffe://{trust_domain}/ns/default/dc/dc2/svc/web", "web", 400,
             "SPIFFE ID in CSR from a different datacenter: dc2, we are dc1"),
            (f"spiffe://{trust_domain}/ns/other/dc/dc1/svc/web", "web", 400, "namespace"),
            (f"spiffe://{trust_domain}/agent/client/dc/dc1/id/x", "web", 400,
             "SPIFFE ID is not in the expected format"),
        ]:
            resp = sign(cluster, server, csr_for(uri), service)
            assert (resp.status_code, text in resp.text) == (status, True), (uri, resp.status_code, resp.text)
        assert sign(cluster, server, "not a csr", "web").status_code == 400
    # Without the cluster key the call is refused before anything is looked at.
    assert sign(cluster, follower, csr_for(f"{own}/web"), "web", key=b"k" * 32).status_code == 403


def test_signed_calls_cannot_be_replayed(mesh: tuple[Cluster, int]) -> None:
    """A captured internal call works once: not again, not on another path, not with another body, and a
    signature header that is not even ASCII is a plain refusal (it was a 500 with a traceback)."""
    cluster, _ = mesh
    trust_domain = roots(addr(cluster, 0))["TrustDomain"]
    body = json.dumps({"csr": csr_for(f"spiffe://{trust_domain}/ns/default/dc/dc1/svc/web"), "service": "web"}).encode()
    headers = request_headers(base64.b64decode(cluster.key), "POST", CA_SIGN, body)
    base = f"http://127.0.0.1:{cluster.http[cluster.wait_leader()]}"
    first = requests.post(f"{base}{CA_SIGN}", data=body, headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    for path, data in [(CA_SIGN, body), ("/v1/internal/buoy/leave", json.dumps({"node": "s1"}).encode()),
                       ("/v1/internal/buoy/leave", body)]:
        again = requests.post(f"{base}{path}", data=data, headers=headers, timeout=30)
        assert again.status_code == 403, (path, again.status_code, again.text)
        assert "not signed with this cluster's key" in again.text
    other_body = json.dumps({"csr": "x", "service": "db"}).encode()
    fresh = request_headers(base64.b64decode(cluster.key), "POST", CA_SIGN, body)
    assert requests.post(f"{base}{CA_SIGN}", data=other_body, headers=fresh, timeout=30).status_code == 403
    odd = dict(request_headers(base64.b64decode(cluster.key), "POST", CA_SIGN, body), **{SIGNATURE_HEADER: "é"})
    odd_resp = requests.post(f"{base}{CA_SIGN}", data=body, headers={k: v.encode() for k, v in odd.items()},
                             timeout=30)
    assert odd_resp.status_code == 403, odd_resp.text
    assert "s1" in requests.get(f"{base}/v1/catalog/nodes", timeout=10).text  # the replayed leave did nothing


def test_rate_limit(mesh: tuple[Cluster, int]) -> None:
    cluster, _ = mesh
    configure(addr(cluster, 0), CSRMaxPerSecond=1)
    try:
        uri = f"spiffe://{roots(addr(cluster, 0))['TrustDomain']}/ns/default/dc/dc1/svc/web"
        csrs = [csr_for(uri) for _ in range(8)]
        leader = cluster.wait_leader()
        with ThreadPoolExecutor(len(csrs)) as pool:
            answers = list(pool.map(lambda csr: sign(cluster, leader, csr, "web"), csrs))
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        assert set(statuses) == {200, 429}
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.text.strip() == "Rate limit reached, try again later"
    finally:
        configure(addr(cluster, 0), CSRMaxPerSecond=50)


def test_renewal_wakes_a_blocking_query(mesh: tuple[Cluster, int]) -> None:
    cluster, client = mesh
    configure(addr(cluster, 1), LeafCertTTL="10s")
    try:
        first = leaf(addr(cluster, client), "renewing")
        life = (certs(first["CertPEM"])[0].not_valid_after_utc - certs(first["CertPEM"])[0].not_valid_before_utc)
        assert life.total_seconds() == 10
        # Renewed between half and nine tenths of its life: the blocking read returns then, well before its wait.
        resp = get(addr(cluster, client), "/v1/agent/connect/ca/leaf/renewing", index=first["ModifyIndex"],
                   wait="60s")
        second = resp.json()
        assert second["SerialNumber"] != first["SerialNumber"]
        assert second["ModifyIndex"] > first["ModifyIndex"] and resp.headers["X-Consul-Index"] == \
            str(second["ModifyIndex"])
        assert certs(second["CertPEM"])[0].not_valid_before_utc >= certs(first["CertPEM"])[0].not_valid_before_utc
        doc = roots(addr(cluster, 0))
        check_leaf(second, "renewing", doc["TrustDomain"], active_root(doc)["RootCert"])
    finally:
        configure(addr(cluster, 1), LeafCertTTL="72h")


def test_root_rotation(mesh: tuple[Cluster, int], tmp_path: Path) -> None:
    cluster, client = mesh
    before = roots(addr(cluster, 0))
    old_root = active_root(before)
    old_leaf = leaf(addr(cluster, client), "web")
    assert verify(old_leaf["CertPEM"], old_root["RootCert"])
    period = get(addr(cluster, 2), "/v1/connect/ca/configuration").json()["Config"]["RotationPeriod"]
    configure(addr(cluster, 2), RotationPeriod="1000h" if period != "1000h" else "2000h")

    after = roots(addr(cluster, 0))
    new_root = active_root(after)
    assert new_root["ID"] != old_root["ID"] and after["TrustDomain"] == before["TrustDomain"]
    published = {r["ID"]: r for r in after["Roots"]}
    assert not published[old_root["ID"]]["Active"] and published[old_root["ID"]]["RootCert"] == old_root["RootCert"]
    (cross_pem,) = new_root["IntermediateCerts"]
    cross = x509.load_pem_x509_certificate(cross_pem.encode())
    new_cert = x509.load_pem_x509_certificate(new_root["RootCert"].encode())
    assert cross.subject == new_cert.subject and cross.public_key() == new_cert.public_key()
    assert cross.issuer == x509.load_pem_x509_certificate(old_root["RootCert"].encode()).subject

    # The client agent's blocking read wakes with a leaf of the new root.
    resp = get(addr(cluster, client), "/v1/agent/connect/ca/leaf/web", index=old_leaf["ModifyIndex"], wait="60s")
    new_leaf = resp.json()
    assert new_leaf["SerialNumber"] != old_leaf["SerialNumber"]
    uri = verify(new_leaf["CertPEM"], new_root["RootCert"])
    assert uri == old_leaf["ServiceURI"]
    # The cross-signed root travels with the new leaf: a peer that trusts only the old root accepts it.
    assert verify(new_leaf["CertPEM"], old_root["RootCert"]) == uri
    openssl_verify(tmp_path, old_root["RootCert"], certs(new_leaf["CertPEM"])[0].public_bytes(
        serialization.Encoding.PEM).decode(), untrusted=cross_pem)
    # The old leaf keeps verifying against the old root, still published, until it expires.
    assert verify(old_leaf["CertPEM"], *(r["RootCert"] for r in after["Roots"])) == uri
    with pytest.raises(VerificationError):
        verify(old_leaf["CertPEM"], new_root["RootCert"])
    # The agent's own roots have followed: its leaf was renewed because they changed.
    assert get(addr(cluster, client), "/v1/agent/connect/ca/roots").json() == after


def test_rotation_to_a_given_key(mesh: tuple[Cluster, int]) -> None:
    cluster, client = mesh
    server = addr(cluster, 1)
    before = leaf(addr(cluster, client), "web")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    config = get(server, "/v1/connect/ca/configuration").json()["Config"]
    body = {"Provider": "consul", "Config": dict(config, PrivateKey=pem), "ForceWithoutCrossSigning": True}
    put_configuration(server, body)

    doc = roots(server)
    root = active_root(doc)
    assert x509.load_pem_x509_certificate(root["RootCert"].encode()).public_key() == key.public_key()
    assert root["IntermediateCerts"] is None  # forced through without cross-signing
    shown = get(server, "/v1/connect/ca/configuration").json()
    assert shown["ForceWithoutCrossSigning"] is True and shown["Config"] == config
    assert "PRIVATE KEY" not in json.dumps(shown) + json.dumps(doc)
    # The same key again is no rotation and no change.
    put_configuration(server, body)
    assert roots(server) == doc and get(server, "/v1/connect/ca/configuration").json() == shown
    # Leaves follow the new root.
    after = leaf(addr(cluster, client), "web", index=before["ModifyIndex"], wait="60s")
    assert verify(after["CertPEM"], root["RootCert"]) == before["ServiceURI"]


def test_ca_config_from_a_config_file(tmp_path: Path, buoy_cli: Any) -> None:
    """Consul's `connect` block: `enabled` is accepted, `ca_config` is the CA's first configuration."""
    from tests.integration.conftest import running_dev_agent

    good = tmp_path / "connect.hcl"
    good.write_text('connect {\n  enabled = true\n  ca_provider = "consul"\n'
                    '  ca_config {\n    leaf_cert_ttl = "24h"\n    csr_max_per_second = 10\n  }\n}\n')
    base = tmp_path / "base.hcl"
    base.write_text(f'data_dir = "{tmp_path / "data"}"\nencrypt = "{base64.b64encode(bytes(32)).decode()}"\n')
    assert buoy_cli("validate", str(base), str(good)).code == 0
    with running_dev_agent(tmp_path, "-config-file", str(good)) as agent:
        config = wait_until(lambda: get(agent.http_addr, "/v1/connect/ca/configuration").json(), "the CA")
        assert config["Config"]["LeafCertTTL"] == "24h" and config["Config"]["CSRMaxPerSecond"] == 10
        issued = leaf(agent.http_addr, "web")
        life = (x509.load_pem_x509_certificate(issued["CertPEM"].encode()).not_valid_after_utc
                - x509.load_pem_x509_certificate(issued["CertPEM"].encode()).not_valid_before_utc)
        assert 23 * 3600 < life.total_seconds() <= 25 * 3600

    for text, message in [('connect {\n  ca_provider = "vault"\n}\n', "connect.ca_provider: 'vault' is not supported"),
                          ('connect {\n  ca_config {\n    leaf_cert_ttl = "1s"\n  }\n}\n',
                           "connect.ca_config: error configuring provider: leaf cert TTL must be greater or equal"),
                          ('connect {\n  enabled = "yes"\n}\n', "connect.enabled: expected bool")]:
        bad = tmp_path / "bad.hcl"
        bad.write_text(text)
        run = buoy_cli("validate", str(base), str(bad))
        assert run.code == 1 and message in run.stderr, run

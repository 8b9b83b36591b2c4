"""The mesh CA's certificates, made with ``cryptography``: keys, roots, cross-signed roots, Consul's checks of
a leaf CSR and the leaf itself. Pure functions: :class:`buoy.server.ca.CAManager` decides when to call them,
agents call ``generate_key`` and ``key_pem`` for the key they keep."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from buoy.core.errors import Forbidden, Invalid
from buoy.core.spiffe import CSR_SERVICE_ID, DEFAULT_NS, trust_domain_uri
from buoy.core.structs.ca import config_error, seconds

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

EC_CURVES: dict[int, type[ec.EllipticCurve]] = {
    224: ec.SECP224R1, 256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
CLOCK_SKEW = 60.0  # certificates start this far in the past, so a server a little ahead is not refused
CROSS_SIGNED_LIFE = 7 * 86400.0  # Consul's: only needed until every proxy has the new root
LEAF_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                           data_encipherment=True, key_agreement=True, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)
CA_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


def colon_hex(data: bytes) -> str:
    """Consul's rendering of key IDs, fingerprints and serials: lower-case hex pairs joined by colons."""
    return ":".join(f"{b:02x}" for b in data)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_id(public_key: Any) -> bytes:
    """Consul's key ID: SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()


def subject_key_id(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectKeyIdentifier (a root brought in by the user may compute it differently)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return key_id(cert.public_key())


def generate_key(key_type: str, bits: int) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(EC_CURVES[bits]())


def key_pem(key: PrivateKey) -> str:
    """The PEM form Consul uses (``EC PRIVATE KEY`` / ``RSA PRIVATE KEY``)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_info(public_key: Any) -> tuple[str, int]:
    return ("rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec", public_key.key_size)


def _ca_name(cluster_id: str) -> x509.Name:
    """Consul's CA common name: ``pri-<uid>.consul.ca.<trust domain, first 8>.consul``; the random part
    keeps successive roots distinguishable by subject."""
    uid = secrets.token_hex(4)
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pri-{uid}.consul.ca.{cluster_id[:8]}.consul")])


def make_root(key: PrivateKey, cluster_id: str, life: float) -> x509.Certificate:
    now = datetime.now(UTC)
    name = _ca_name(cluster_id)
    kid = key_id(key.public_key())
    builder = (x509.CertificateBuilder()
               .subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(secrets.randbits(63) | 1)
               .not_valid_before(now - timedelta(seconds=CLOCK_SKEW)).not_valid_after(now + timedelta(seconds=life))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(CA_USAGE, critical=True)
               .add_extension(x509.SubjectKeyIdentifier(kid), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(kid, None, None), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                   trust_domain_uri(cluster_id))]), critical=False))
    return builder.sign(key, hashes.SHA256())


def cross_sign(new_root: x509.Certificate, old_root: x509.Certificate, old_key: PrivateKey) -> x509.Certificate:
    """The new root's certificate issued by the old root: a leaf of the new root chains to the old one
    through it."""
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(new_root.subject).issuer_name(old_root.subject).public_key(new_root.public_key())
               .serial_number(secrets.randbits(63) | 1)
               .not_valid_before(now - timedelta(seconds=CLOCK_SKEW))
               .not_valid_after(now + timedelta(seconds=CROSS_SIGNED_LIFE)))
    for ext in new_root.extensions:
        if ext.oid != ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier(subject_key_id(old_root), None, None), critical=False)
    return builder.sign(old_key, hashes.SHA256())


def root_row(cert: x509.Certificate, cluster_id: str, intermediates: list[str]) -> dict[str, Any]:
    """Consul's ``CARoot`` for a root certificate (indexes are added when the command applies)."""
    key_type, bits = key_info(cert.public_key())
    return {
        "ID": colon_hex(cert.fingerprint(hashes.SHA1())),  # Consul's root ID: the SHA-1 fingerprint
        "Name": "Consul CA Root Cert",
        "SerialNumber": cert.serial_number,
        "SigningKeyID": colon_hex(subject_key_id(cert)),
        "ExternalTrustDomain": cluster_id,
        "NotBefore": rfc3339(cert.not_valid_before_utc),
        "NotAfter": rfc3339(cert.not_valid_after_utc),
        "RootCert": cert_pem(cert),
        "IntermediateCerts": intermediates,
        "Active": True,
        "PrivateKeyType": key_type,
        "PrivateKeyBits": bits,
        "RotatedOutAt": 0.0,
    }


def load_key(text: str) -> PrivateKey:
    """A key this CA stored itself (so known to be EC or RSA)."""
    key = serialization.load_pem_private_key(text.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def new_root(config: dict[str, Any], cluster_id: str) -> tuple[PrivateKey, x509.Certificate]:
    key = generate_key(config["PrivateKeyType"], config["PrivateKeyBits"])
    return key, make_root(key, cluster_id, seconds(config, "RootCertTTL"))


def brought_root(private_key: str, root_cert: str, config: dict[str, Any],
                  cluster_id: str) -> tuple[PrivateKey, x509.Certificate]:
    """The key (and root certificate, made from the key when not given) a PUT brought in."""
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise config_error(f"error parsing private key: {' '.join(str(e).split())}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise config_error("private key type must be either 'ec' or 'rsa'")
    if not root_cert:
        return key, make_root(key, cluster_id, seconds(config, "RootCertTTL"))
    try:
        cert = x509.load_pem_x509_certificate(root_cert.encode())
    except ValueError as e:
        raise config_error(f"error parsing root cert: {' '.join(str(e).split())}") from None
    if key_id(cert.public_key()) != key_id(key.public_key()):
        raise config_error("the root cert's public key does not match the private key")
    return key, cert


def check_csr(csr_pem: str, service: str, trust_domain: str,
              datacenter: str) -> tuple[x509.CertificateSigningRequest, str]:
    """Consul's checks of a leaf CSR: one SPIFFE service ID, for the service asked for, in this datacenter
    and trust domain. Returns the CSR and its URI."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as e:
        raise Invalid(f"failed to parse CSR: {' '.join(str(e).split())}") from None
    if not csr.is_signature_valid:
        raise Invalid("CSR signature is invalid")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Invalid("CSR SAN contains an invalid number of URIs: 0") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise Invalid(f"CSR SAN contains an invalid number of URIs: {len(uris)}")
    if san.get_values_for_type(x509.RFC822Name):
        raise Invalid("CSR SAN does not allow specifying email addresses")
    match = CSR_SERVICE_ID.fullmatch(uris[0])
    if match is None:
        raise Invalid(f"SPIFFE ID is not in the expected format: {uris[0]}")
    host, namespace, dc, name = match.groups()
    if namespace != DEFAULT_NS:
        raise Invalid(f'SPIFFE ID in CSR names namespace "{namespace}"; only "default" exists')
    if name != service:
        # Consul's answer when the caller may not write the service the CSR names.
        raise Forbidden(f'Permission denied: the CSR is for service "{name}", the request for "{service}"')
    if dc != datacenter:
        raise Invalid(f"SPIFFE ID in CSR from a different datacenter: {dc}, we are {datacenter}")
    if host != trust_domain:
        raise Invalid(f"SPIFFE ID in CSR from a different trust domain: {host}, we are {trust_domain}")
    return csr, uris[0]


def sign_leaf(csr: x509.CertificateSigningRequest, uri: str, root: x509.Certificate, key: PrivateKey,
              ttl: float) -> x509.Certificate:
    """A leaf as Consul's provider issues it: no subject, the SPIFFE ID as a critical URI SAN, client and
    server authentication, valid from a little in the past for LeafCertTTL."""
    start = datetime.now(UTC) - timedelta(seconds=min(CLOCK_SKEW, ttl / 4))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([])).issuer_name(root.subject).public_key(csr.public_key())
               .serial_number(int.from_bytes(secrets.token_bytes(16)) >> 1 or 1)
               .not_valid_before(start).not_valid_after(start + timedelta(seconds=ttl))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(LEAF_USAGE, critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier(key_id(csr.public_key())), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(subject_key_id(root), None, None), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True))
    return builder.sign(key, hashes.SHA256())

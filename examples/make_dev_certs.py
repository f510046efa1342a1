#!/usr/bin/env python3
"""Makes development TLS certificates (for the tests and the demo; no key is committed), with python3-cryptography:
  ca.pem/ca.key            a test CA
  server.pem/server.key    signed by it, for DNS:localhost and IP:127.0.0.1, valid now
  expired.pem/expired.key  signed by it, for the same names, expired yesterday
  other_ca.pem             an unrelated CA (the "wrong CA")
Usage: make_dev_certs.py OUT_DIR"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def key():
    return ec.generate_private_key(ec.SECP256R1())


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca(out, stem, cn):
    k = key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(k, hashes.SHA256()))
    write(os.path.join(out, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM))
    write(os.path.join(out, stem + ".key"), pem_key(k))
    return cert, k


def leaf(out, stem, ca_cert, ca_key, not_before, not_after):
    k = key()
    cert = (x509.CertificateBuilder().subject_name(name("localhost"))
            .issuer_name(ca_cert.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    write(os.path.join(out, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM))
    write(os.path.join(out, stem + ".key"), pem_key(k))


def main():
    out = sys.argv[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = ca(out, "ca", "Cairn Test CA")
    ca(out, "other_ca", "Some Other CA")
    leaf(out, "server", ca_cert, ca_key, now - datetime.timedelta(hours=1),
         now + datetime.timedelta(days=1))
    leaf(out, "expired", ca_cert, ca_key, now - datetime.timedelta(days=3),
         now - datetime.timedelta(days=1))


if __name__ == "__main__":
    main()

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509

from tmsp_common import errors
from tmsp_common.grpc_server import status_for
from tmsp_common.tls import ensure_ca, ensure_server_certificate, issue_certificate


def test_server_certificate_is_signed_by_the_local_ca_and_created_once(tmp_path: Path) -> None:
    paths = ensure_server_certificate(tmp_path, "grpc", ("localhost", "127.0.0.1"))
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert oct(paths.key.stat().st_mode & 0o777) == "0o600"
    again = ensure_server_certificate(tmp_path, "grpc")
    assert again.cert.read_bytes() == paths.cert.read_bytes()


def test_client_certificates_are_for_client_auth(tmp_path: Path) -> None:
    ensure_ca(tmp_path)
    pem, _key = issue_certificate(tmp_path, "product-1", client=True)
    cert = x509.load_pem_x509_certificate(pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert cert.subject.rfc4514_string() == "CN=product-1"


def test_each_domain_error_has_one_status() -> None:
    cases = {
        errors.InvalidArgument("email", "bad"): grpc.StatusCode.INVALID_ARGUMENT,
        errors.NotFound("x"): grpc.StatusCode.NOT_FOUND,
        errors.AlreadyExists("x"): grpc.StatusCode.ALREADY_EXISTS,
        errors.Unauthenticated("x"): grpc.StatusCode.UNAUTHENTICATED,
        errors.PermissionDenied("x"): grpc.StatusCode.PERMISSION_DENIED,
        errors.FailedPrecondition("x"): grpc.StatusCode.FAILED_PRECONDITION,
        errors.RateLimited("x", 3): grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.Unavailable("x"): grpc.StatusCode.UNAVAILABLE,
    }
    for exc, code in cases.items():
        assert status_for(exc) == code
    assert str(errors.InvalidArgument("email", "bad")) == "email: bad"

"""The generated package matches proto/: every file generated, every service has a stub."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PROTO_ROOT = Path(__file__).resolve().parents[3] / "proto"
PROTO_FILES = sorted(PROTO_ROOT.rglob("*.proto"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROTO_ROOT).with_suffix("").parts) + "_pb2"


@pytest.mark.parametrize("proto", PROTO_FILES, ids=lambda p: p.name)
def test_every_proto_file_is_generated_with_its_services(proto: Path) -> None:
    module = importlib.import_module(module_name(proto))
    services = list(module.DESCRIPTOR.services_by_name)
    if services:
        grpc_module = importlib.import_module(module_name(proto) + "_grpc")
        for service in services:
            assert hasattr(grpc_module, f"{service}Stub")
            assert hasattr(grpc_module, f"add_{service}Servicer_to_server")


def test_there_is_something_to_test() -> None:
    assert len(PROTO_FILES) >= 8

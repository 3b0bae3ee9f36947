"""atheris target: a whole upload (gzip, per-line detection, normalisation to protobuf).

Every line must become an event or a rejection; nothing may escape as an exception except
the documented upload-level errors (too large, bad gzip).
"""

import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from _common import require_instrumented

    from tmsp_ingest.domain.intake import (
        UploadContext,
        UploadTooLarge,
        decompress,
        normalise_upload,
    )
    from tmsp_ingest.domain.records import InvalidRecord

CTX = UploadContext("p", "a", 1, "f", 1.8e9, 2026)


def one_input(data: bytes) -> None:
    try:
        plain = decompress(data, 1 << 20)
    except (UploadTooLarge, InvalidRecord):
        return
    for result in normalise_upload(plain, CTX):
        del result


if __name__ == "__main__":
    require_instrumented(decompress, normalise_upload)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()

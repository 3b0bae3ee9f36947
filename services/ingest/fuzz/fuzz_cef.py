"""atheris target: the CEF parser."""

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from _common import run

    from tmsp_ingest.domain.cef import parse_cef

if __name__ == "__main__":
    run(lambda text: parse_cef("CEF:" + text, default_year=2026), parse_cef)

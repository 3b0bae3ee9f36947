"""atheris target: Suricata EVE and JSON-lines parsing."""

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from _common import run

    from tmsp_ingest.domain.jsonfmt import parse_json

if __name__ == "__main__":
    run(parse_json, parse_json)

"""atheris target: the RFC 5424 syslog parser."""

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from _common import run

    from tmsp_ingest.domain.syslog import parse_rfc5424

if __name__ == "__main__":
    run(lambda text: parse_rfc5424("<13>1 " + text, default_year=2026), parse_rfc5424)

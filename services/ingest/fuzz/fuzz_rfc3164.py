"""atheris target: the RFC 3164 syslog parser."""

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    from _common import run

    from tmsp_ingest.domain.syslog import parse_rfc3164

if __name__ == "__main__":
    run(lambda text: parse_rfc3164("<13>" + text, default_year=2026, now=1.8e9), parse_rfc3164)

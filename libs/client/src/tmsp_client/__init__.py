"""tmsp, the portal's command-line client: every screen of the portal as a command over the
services' gRPC APIs (auth, the reporter, ingest's registry)."""

from tmsp_ingest.entrypoints.main import main

main()

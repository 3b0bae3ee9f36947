from tmsp_reporter.entrypoints.main import main

main()

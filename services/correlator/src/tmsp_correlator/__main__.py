from tmsp_correlator.entrypoints.main import main

main()

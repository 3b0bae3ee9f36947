import sys

if sys.argv[1:2] == ["match"]:
    from tmsp_correlator.entrypoints.match_process import main as match_main

    match_main(sys.argv[2:])
else:
    from tmsp_correlator.entrypoints.main import main

    main()

from tmsp_auth.entrypoints.main import main

main()

from tmsp_notifier.entrypoints.main import main

main()

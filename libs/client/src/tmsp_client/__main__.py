from tmsp_client.cli import main

raise SystemExit(main())

from bianet_lib.cli import main

raise SystemExit(main())

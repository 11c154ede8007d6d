from captioning.cli import main

raise SystemExit(main())

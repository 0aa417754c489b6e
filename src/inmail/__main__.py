from inmail.cli import main

raise SystemExit(main())

from eval_runner.cli import main

raise SystemExit(main())

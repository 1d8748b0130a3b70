"""`python -m fedworker`."""

from fedworker.main import main

raise SystemExit(main())

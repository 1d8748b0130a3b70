"""`python -m fedserving`."""

from fedserving.main import main

raise SystemExit(main())

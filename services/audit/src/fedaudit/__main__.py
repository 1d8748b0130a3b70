"""`python -m fedaudit`."""

from fedaudit.main import main

raise SystemExit(main())

"""`python -m fedscheduler`."""

from fedscheduler.main import main

raise SystemExit(main())

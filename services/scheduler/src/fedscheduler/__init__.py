"""fedscheduler: the scheduler service (python -m fedscheduler)."""

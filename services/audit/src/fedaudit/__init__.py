"""fedaudit: the audit service (docs/audit.md). One per party: it taps every message that
enters or leaves the party through a durable bus fan-out, checks it against control, algorithm
and data rules, keeps a hash-chained, signed log, and asks the party's scheduler to stop a job
on a critical finding."""

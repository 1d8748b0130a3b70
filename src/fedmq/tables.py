"""Reading a party's CSV table: kept for `fedmq demo`; the implementation lives in fedflow.tables.

An id column, an optional label, numeric features; every bad row is reported with its file and
line number (fedflow.tables has the TableStore and the rules for missing values).
"""

from fedflow.tables import Table, TableError, read_table

__all__ = ["Table", "TableError", "read_table"]

"""The durable audit log (SQLite, WAL): what an entry is, what may go into one, and the store.

May import: wattshift.model and the standard library.
"""

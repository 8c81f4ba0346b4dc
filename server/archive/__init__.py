"""The permanent archive of ended requests (R15): files by day with a hash-chained
manifest (layout.py, manifest.py, record.py, writer.py), the Redis side that makes
archiving exactly-once and removes hot keys (index.py), the background component
(archiver.py), hot blob collection (blob_gc.py) and the printable sheet (sheet.py)."""

"""Queue sources: one module per queue service, each the only importer of its SDK."""

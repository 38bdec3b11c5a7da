"""Job stores: the JobStore protocol (chunking.store) over SQLite (local) and DynamoDB (cloud)."""

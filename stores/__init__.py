"""Job stores: the JobStore protocol (chunking.store) over SQLite (the local default), Postgres
(shared by several replicas) and DynamoDB (the cloud path's, and an app's on AWS); `factory`
opens the one JOB_STORE_URL names."""

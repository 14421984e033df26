-- The guard's, metering's and the router's (files and batches) databases beside auth's (POSTGRES_DB): one database per service, as `llmaas up` keeps
-- one SQLite file per service.
CREATE DATABASE llmaas_guard;
CREATE DATABASE llmaas_metering;
CREATE DATABASE llmaas_router;

-- The guard's and metering's databases beside auth's (POSTGRES_DB): one database per service, as `llmaas up` keeps
-- one SQLite file per service.
CREATE DATABASE llmaas_guard;
CREATE DATABASE llmaas_metering;

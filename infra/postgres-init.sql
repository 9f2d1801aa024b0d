-- Databases beside Airflow's metadata DB (created by POSTGRES_DB): MLflow's store and the ledger.
CREATE DATABASE mlflow OWNER mlops;
CREATE DATABASE ledger OWNER mlops;

#!/bin/sh
# MinIO's one-shot init job (the `minio-init` service): the buckets, and a service account for
# the platform that can reach only them. The root credentials stay with MinIO and this job;
# Airflow, the workers and the MLflow server get MINIO_MLOPS_ACCESS_KEY / MINIO_MLOPS_SECRET_KEY.
# Safe to run again: every step checks before it changes anything.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${MINIO_MLOPS_ACCESS_KEY:?}" "${MINIO_MLOPS_SECRET_KEY:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
# mlflow: the MLflow server's --artifacts-destination; dvc: the DVC remote (MLOPS_DVC_REMOTE_URL).
mc mb --ignore-existing local/mlflow local/dvc
# Nothing is public: artifacts and training data are read through credentials only.
mc anonymous set none local/mlflow
mc anonymous set none local/dvc

if ! mc admin policy info local mlops-buckets >/dev/null 2>&1; then
  mc admin policy create local mlops-buckets /etc/minio-init/mlops-buckets-policy.json
fi
# `user add` on an existing user sets its secret again, so a changed secret takes effect.
mc admin user add local "$MINIO_MLOPS_ACCESS_KEY" "$MINIO_MLOPS_SECRET_KEY" >/dev/null
# Plain sh `case`, not grep: the mc image is minimal.
case "$(mc admin user info local "$MINIO_MLOPS_ACCESS_KEY")" in
  *mlops-buckets*) ;;
  *) mc admin policy attach local mlops-buckets --user "$MINIO_MLOPS_ACCESS_KEY" ;;
esac
echo "minio-init: buckets mlflow, dvc; user $MINIO_MLOPS_ACCESS_KEY with policy mlops-buckets"

"""The Streamlit dashboard's non-page code: job backend, MLflow reads, shared widgets."""

"""Streamlit dashboard for gradcam_core: `streamlit run dashboard/app.py`."""

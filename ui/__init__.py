"""Streamlit-side helpers shared by dashboard.py and the pages (the engine never imports this)."""

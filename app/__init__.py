"""Streamlit front end of SEN Crystal Explorer (entry point: app/Home.py)."""

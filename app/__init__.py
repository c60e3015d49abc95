"""Streamlit front end of SEN Crystal Explorer (the page: app/Home.py; served ready by app/serve.py)."""

"""The consent-aware personalization API (FastAPI + uvicorn): `fedpers serve`."""

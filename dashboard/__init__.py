"""The jobs dashboard the local app serves at /ui: a static page (dashboard/static, no build
step) and the routes it needs beside the /jobs API (dashboard/routes.py)."""

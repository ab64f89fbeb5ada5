"""The web dashboard: static files served by the app itself (no build step, no CDN).

``index.html`` is served at ``/`` and everything else under ``/dashboard/``; the page uses
relative URLs only, so it also works behind a reverse proxy that adds a path prefix. The
API routes are registered before this and keep winning; unknown ``/api`` paths still get
the API's JSON 404 because nothing here is mounted at ``/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Beamline networks have no internet: the page may only talk to this server. Plotly sets
# inline styles on its SVG, hence 'unsafe-inline' for styles (never for scripts).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
       "object-src 'none'; base-uri 'self'; frame-ancestors 'self'")


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` (index) and ``/dashboard/`` (modules, styles, vendor)."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "content-security-policy": CSP, "cache-control": "no-cache",
            "x-content-type-options": "nosniff"})

    app.mount("/dashboard", StaticFiles(directory=STATIC, check_dir=True), name="dashboard")

"""Swagger UI's files served by the API itself (from the swagger-ui-bundle package), not a CDN.

flask-smorest renders /api/docs with ``OPENAPI_SWAGGER_UI_URL`` in front of each asset's name; a
CDN there leaves the page blank on a machine without internet access. The assets are a plain
Flask blueprint, so they stay out of the OpenAPI document and need no token, like the page.
"""

from __future__ import annotations

import posixpath

from flask import Blueprint, Flask, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

SWAGGER_UI_PATH = "/docs"  # below OPENAPI_URL_PREFIX: /api/docs
# Relative to the page (/api/docs), so the docs still work behind a proxy's path prefix.
ASSETS_URL = posixpath.basename(SWAGGER_UI_PATH) + "/assets/"
# Swagger UI's default puts a badge on the page that calls validator.swagger.io.
SWAGGER_UI_CONFIG = {"validatorUrl": None}
ASSET_MAX_AGE = 3600


def asset(filename: str) -> Response:
    """One file of Swagger UI's dist (a missing one is a problem+json 404)."""
    return send_from_directory(swagger_ui_path, filename, max_age=ASSET_MAX_AGE)


def init_app(app: Flask) -> None:
    """Serve the assets where the Swagger UI page of ``app``'s configuration looks for them."""
    prefix = app.config["OPENAPI_URL_PREFIX"].rstrip("/")
    rule = f"{prefix}{app.config['OPENAPI_SWAGGER_UI_PATH']}/assets/<path:filename>"
    blp = Blueprint("docs_assets", __name__)  # one per app: tests build several
    blp.add_url_rule(rule, "asset", asset, methods=["GET"])
    app.register_blueprint(blp)

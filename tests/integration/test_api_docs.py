"""Swagger UI at /api/docs works without internet access: the app serves every file it loads.

Negative control: ``SCHEDULER_TEST_DOCS_FROM_CDN=1 pytest tests/integration/test_api_docs.py``
builds the app with the CDN base URL it used before; the tests then fail (the page names an
``https://`` asset the app does not serve).
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist/"
CONTENT_TYPES = {".css": {"text/css"}, ".js": {"text/javascript", "application/javascript"}}


class _Assets(HTMLParser):
    """The URLs a browser fetches to render the page: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def docs_app(app, settings):
    if os.environ.get("SCHEDULER_TEST_DOCS_FROM_CDN") != "1":
        return app
    from scheduler_app.api import docs
    from scheduler_app.app import create_app

    saved = docs.ASSETS_URL
    docs.ASSETS_URL = CDN
    try:
        return create_app(settings)
    finally:
        docs.ASSETS_URL = saved


@pytest.fixture(scope="module")
def page(docs_app) -> str:
    response = docs_app.test_client().get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def _assets(page: str) -> list[str]:
    parser = _Assets()
    parser.feed(page)
    return parser.urls


def test_docs_page_names_no_remote_url(page):
    assert _assets(page), page  # it does load its scripts and style sheet
    assert not re.findall(r"(?:https?:)?//[\w.-]+", page), page


def test_every_asset_of_the_docs_page_is_served_by_the_app(docs_app, page):
    client = docs_app.test_client()
    names = set()
    for url in _assets(page):
        absolute = urljoin("/api/docs", url)
        parts = urlsplit(absolute)
        assert not parts.scheme and not parts.netloc, url
        response = client.get(parts.path)  # no token: the docs are public, as the page is
        assert response.status_code == 200, (url, response.status_code)
        extension = os.path.splitext(parts.path)[1]
        assert response.mimetype in CONTENT_TYPES[extension], (url, response.mimetype)
        assert len(response.get_data()) > 1000, url
        names.add(parts.path.rsplit("/", 1)[-1])
    assert {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"} <= names


def test_docs_page_reads_the_spec_of_this_app(page):
    assert '"/api/openapi.json"' in page


def test_unknown_docs_asset_is_a_problem_404(api, assert_problem):
    assert_problem(api.get("/api/docs/assets/no-such-file.js"), 404)
    assert_problem(api.get("/api/docs/assets/../../setup.cfg"), 404)

"""HTTP client of the API for the CLI: the session of one profile, refreshed when it expires."""

from __future__ import annotations

import time
from typing import Any

import requests

from scheduler_cli import store

# Refresh this long before the access token's expiry, so a request never races it.
REFRESH_MARGIN = 30.0
TIMEOUT = 30.0
USER_AGENT = "scheduler-cli/1.0"


class ApiError(Exception):
    """The API answered an error (problem+json), or could not be reached. Exit code 3."""

    def __init__(self, status: int | None, title: str, detail: str = "", body: Any = None):
        super().__init__(status, title)
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status else ""
        return f"{prefix}{self.title}" + (f": {self.detail}" if self.detail else "")


class NotLoggedIn(ApiError):
    def __init__(self, profile: str):
        super().__init__(
            None, "not logged in", f"run `scheduler login --url URL ... --profile {profile}` first"
        )


def _error_of(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail") or ""
        if body.get("errors"):
            detail = f"{detail} {body['errors']}".strip()
        return ApiError(response.status_code, str(body.get("title", response.reason)), detail, body)
    return ApiError(response.status_code, response.reason or "error", response.text[:500])


def send(method: str, url: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    try:
        return requests.request(method, url, headers=headers, **kwargs)
    except requests.RequestException as exc:
        raise ApiError(None, "cannot reach the API", str(exc)) from None


def login(url: str, client_id: str, client_secret: str, profile: str | None) -> dict[str, Any]:
    """POST /api/v1/auth/token and store the session; returns the API's JSON."""
    url = url.rstrip("/")
    response = send(
        "POST",
        f"{url}/api/v1/auth/token",
        json={"client_id": client_id, "client_secret": client_secret},
    )
    if response.status_code != 200:
        raise _error_of(response)
    tokens = response.json()
    data = store.load()
    name = store.profile_name(profile, data)
    data["profiles"][name] = _session(url, client_id, tokens)
    data["current"] = name
    store.save(data)
    return tokens


def _session(url: str, client_id: str, tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": url,
        "client_id": client_id,
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "expires_at": time.time() + float(tokens.get("expires_in", 0)),
    }


class Api:
    """Requests on behalf of one stored profile."""

    def __init__(self, profile: str | None = None) -> None:
        self.data = store.load()
        self.profile = store.profile_name(profile, self.data)
        self.session = self.data["profiles"].get(self.profile)
        if not self.session:
            raise NotLoggedIn(self.profile)
        self.url = self.session["url"]

    def refresh(self) -> None:
        """POST /api/v1/auth/refresh with the refresh token; store the new pair."""
        response = send(
            "POST",
            f"{self.url}/api/v1/auth/refresh",
            headers={"Authorization": f"Bearer {self.session['refresh_token']}"},
        )
        if response.status_code != 200:
            error = _error_of(response)
            if response.status_code == 401:
                error.detail = f"{error.detail} (session expired: run `scheduler login` again)"
            raise error
        self.session = _session(self.url, self.session["client_id"], response.json())
        self.data = store.load()
        self.data["profiles"][self.profile] = self.session
        store.save(self.data)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The response of a 2xx; an ApiError otherwise. One refresh-and-retry on a 401."""
        if self.session.get("expires_at", 0) - REFRESH_MARGIN < time.time():
            self.refresh()
        response = self._authorized(method, path, **kwargs)
        if response.status_code == 401:
            self.refresh()
            response = self._authorized(method, path, **kwargs)
        if not 200 <= response.status_code < 300:
            raise _error_of(response)
        return response

    def _authorized(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**kwargs.pop("headers", {})}
        headers["Authorization"] = f"Bearer {self.session['access_token']}"
        return send(method, f"{self.url}{path}", headers=headers, **kwargs)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "not JSON", response.text[:500]) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.json("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.json("POST", path, json=body, **kwargs)

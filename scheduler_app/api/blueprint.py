"""The API's Blueprint: flask-smorest's, with request bodies parsed by ``jsonio.loads_body``."""

from __future__ import annotations

from typing import Any

import flask_smorest
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from scheduler_app.api.jsonio import loads_body


class RequestParser(FlaskParser):
    """webargs' Flask parser reading JSON bodies with our limits (see ``loads_body``)."""

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        return loads_body(req.get_data(cache=True))


class Blueprint(flask_smorest.Blueprint):
    """Every resource's blueprint."""

    ARGUMENTS_PARSER = RequestParser()

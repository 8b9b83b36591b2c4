"""Errors a handler raises to answer with Consul's status code and a one-line plain-text body."""


class HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def bad_request(text: str) -> HTTPError:
    return HTTPError(400, text)


def not_found(text: str = "") -> HTTPError:
    return HTTPError(404, text)

"""Route a client's requests for the real service hosts to the loopback simulator.

The clients under test hard-code `https://<host>` (login.microsoftonline.com, *.salesforce.com, the
instance URL). This transport adapter stands in for DNS and TLS termination: a request to one of
those hosts (or to the simulator itself) is sent to the simulator's plain-HTTP address, path and
query unchanged. The client libraries themselves are used unmodified.
"""

from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter


class LoopbackAdapter(HTTPAdapter):
    def __init__(self, sim_base, host_suffixes):
        super().__init__()
        self.sim = urlsplit(sim_base)
        self.suffixes = tuple(host_suffixes)

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        host = url.hostname or ""
        if host.endswith(self.suffixes) or (host == self.sim.hostname and url.port == self.sim.port):
            request.url = urlunsplit((self.sim.scheme, self.sim.netloc, url.path, url.query, url.fragment))
        return super().send(request, **kwargs)


def routed_session(sim_base, host_suffixes):
    session = requests.Session()
    adapter = LoopbackAdapter(sim_base, host_suffixes)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def check(condition, message):
    if not condition:
        raise AssertionError(message)

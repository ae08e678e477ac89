"""Whether a run can log to W&B online, decided before it starts and in bounded time.

``wandb.init`` with an API key and no network waits about 100 s (two 5 s account look-ups, then its 90 s
``init_timeout``) and then raises ``CommError``. So before a run goes online genzoo asks the W&B server
(``WANDB_BASE_URL``, else wandb's own setting) for any HTTP answer: a GET of the base URL, through the same proxies
wandb-core uses, in a daemon thread joined for at most ``probe_timeout`` seconds (a socket timeout alone does not
bound a DNS look-up). Any status, even 404 or a redirect, counts as an answer; a refused connection, a silent
listener, a failed TLS handshake or a host that does not resolve does not.

- ``auto`` (the default): ``WANDB_MODE`` where it is set; else offline without credentials (silently, as before);
  online with credentials when the server answers; offline with one warning line saying why and how to upload the
  run later when it does not.
- ``online`` (or ``WANDB_MODE=online`` under ``auto``): refused in one sentence, before the run folder has any
  file, without credentials or without an answer.
- ``offline`` and ``disabled``: as asked, no probe.

After a fallback wandb's own usage telemetry is switched off for the process: it goes to the same server whatever
the run's mode, and at exit it waited about 13 s for one that does not answer.

What the probe leaves to ``wandb.init``: it does not check the API key (a rejected key fails there within a second;
a server that answers but cannot start the run, after at most ``init_timeout`` plus 10 s of account look-ups), and
:mod:`genzoo.run.wandb_logger` then goes offline or stops. An unanswered probe is not remembered: each job of a
sweep asks again (at most ``probe_timeout`` seconds each), so a sweep goes online again as soon as the server
answers. Proxies are the standard ``http(s)_proxy``/``no_proxy`` variables and ``WANDB_HTTP(S)_PROXY``; a proxy
given only in code (``wandb.Settings(https_proxy=…)``) is not seen.
"""

from __future__ import annotations

import ipaddress
import logging
import netrc
import os
import ssl
import threading
import urllib.request
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from genzoo.errors import GenzooError

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
PROBE_TIMEOUT = 3.0  # seconds; a W&B server that answers at all does so in well under a second
FALLBACK_BASE_URL = "https://api.wandb.ai"  # only where wandb cannot say its own default
FIX = {"logger": "use logger.wandb.mode=auto (offline when the server does not answer) or logger.wandb.mode=offline",
       "env": "unset WANDB_MODE (then logger.wandb.mode=auto goes offline when the server does not answer) or set "
              "WANDB_MODE=offline"}


def wandb_base_url() -> str:
    """The W&B server wandb.init talks to: ``WANDB_BASE_URL``, else wandb's settings (``wandb login --host``) and
    its default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"].rstrip("/")
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url).rstrip("/")
    except Exception:  # an older or newer wandb without these internals
        return FALLBACK_BASE_URL


def wandb_credentials(base_url: str | None = None) -> bool:
    """True when W&B has credentials for the server: ``WANDB_API_KEY``, an identity token file, or the ``.netrc``
    entry ``wandb login`` writes (read as wandb reads it, with ``$NETRC`` and its host aliases)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    url = base_url or wandb_base_url()
    try:
        from wandb.sdk.lib import wbauth
    except ImportError:
        wbauth = None
    if wbauth is not None:
        try:
            return wbauth.read_netrc_auth(host=url) is not None
        except Exception:  # an entry wandb cannot use: wandb.init will say what is wrong with it
            return True
    try:
        return netrc.netrc().authenticators(urlsplit(url).netloc) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is already an answer; following it could only wait on another host."""

    def redirect_request(self, *args, **kwargs):
        return None


def _proxies(url: str) -> dict[str, str]:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:  # Go's net/http, which wandb-core uses, never sends loopback requests through a proxy
        return {}
    proxies = urllib.request.getproxies()  # http_proxy, https_proxy; no_proxy is honoured when the request is made
    for scheme in ("http", "https"):
        if os.environ.get(f"WANDB_{scheme.upper()}_PROXY"):
            proxies[scheme] = os.environ[f"WANDB_{scheme.upper()}_PROXY"]
    return proxies


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    text = getattr(error, "strerror", None) or str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def server_unreachable(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the server at ``url`` gives any HTTP answer within ``timeout`` seconds, else why not (a phrase)."""
    insecure = os.environ.get("WANDB_INSECURE_DISABLE_SSL", "").lower() in ("1", "true", "yes")
    context = ssl.create_default_context()
    if insecure:  # as wandb-core does with this setting
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(_proxies(url)), _NoRedirect(),
                                         urllib.request.HTTPSHandler(context=context))
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            opener.open(urllib.request.Request(url, headers={"User-Agent": "genzoo"}), timeout=timeout).close()
            outcome.append(None)
        except HTTPError:  # a status the server chose to send: it answered
            outcome.append(None)
        except (URLError, HTTPException, OSError, ValueError) as e:
            outcome.append(_reason(e, timeout))

    thread = threading.Thread(target=ask, name="genzoo-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def requested_mode(requested: str) -> tuple[str, str, str]:
    """(the mode asked for, ``WANDB_MODE`` read under ``auto``; who asked for it; how to avoid a refusal)."""
    if requested not in WANDB_MODES:
        raise GenzooError(f"logger.wandb.mode={requested!r} is unknown: use one of {', '.join(WANDB_MODES)}.")
    env = os.environ.get("WANDB_MODE")
    if requested == "auto" and env in ("online", "offline", "disabled", "dryrun"):
        return ("offline" if env == "dryrun" else env), f"WANDB_MODE={env}", FIX["env"]
    return requested, f"logger.wandb.mode={requested}", FIX["logger"]


def sync_hint(save_dir: str | None, run_id: str | None) -> str:
    """How to upload an offline run later: ``wandb sync`` on wandb's folder for it, where that is known."""
    if save_dir is None:
        return "`wandb sync` on the offline-run folder wandb names when the run ends"
    return f"`wandb sync {save_dir}/wandb/offline-run-*{'-' + run_id if run_id else ''}`"


def wandb_mode(requested: str, save_dir: str | None = None, run_id: str | None = None,
               probe_timeout: float = PROBE_TIMEOUT) -> str:
    """The mode W&B runs in, as the module docstring says: ``online``, ``offline`` or ``disabled``; a forced
    ``online`` that cannot work raises :class:`GenzooError`. ``save_dir`` and ``run_id`` only name the offline run's
    folder in the warning."""
    mode, who, fix = requested_mode(requested)
    if mode in ("offline", "disabled"):
        return mode
    url = wandb_base_url()
    if not wandb_credentials(url):
        if mode == "auto":
            return "offline"
        raise GenzooError(f"{who} but W&B has no credentials for {url}, so the run cannot log online: run "
                          f"`wandb login` or set WANDB_API_KEY, or {fix}.")
    why = server_unreachable(url, probe_timeout)
    if why is None:
        return "online"
    if mode == "online":
        raise GenzooError(f"{who} but the W&B server {url} does not answer ({why}), so the run cannot log "
                          f"online: check the network and WANDB_BASE_URL, or {fix}.")
    log.warning(f"The W&B server {url} does not answer ({why}), so this run logs to W&B offline: upload it "
                f"later with {sync_hint(save_dir, run_id)}.")
    mute_wandb_telemetry()
    return "offline"


def mute_wandb_telemetry() -> None:
    """Send none of wandb's own usage telemetry: it goes to the same server, and at exit it waits up to 15 s for a
    server that does not answer, even after an offline run."""
    try:
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()
    except (ImportError, AttributeError):  # a wandb without it sends none
        pass

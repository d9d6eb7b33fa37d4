"""Aim's UI pages made to work offline and on a sub-path.

Aim's index loads pyodide (for Python boards) from a CDN, an icon font from Google and a
telemetry loader, and the home page asks GitHub for release notes. Here nothing may leave
Trainyard's origin: those tags are removed, `fetch` answers cross-origin requests locally with
an empty list, pyodide is stubbed (the explorers do not need it), and a Content-Security-Policy
backs this up.
"""

from __future__ import annotations

import re

EXTERNAL_SCRIPT_RE = re.compile(r"<script\b[^>]*\bsrc=[\"']https?://[^\"']*[\"'][^>]*>\s*</script>",
                                re.IGNORECASE)
EXTERNAL_LINK_RE = re.compile(r"<link\b[^>]*\bhref=[\"']https?://[^\"']*[\"'][^>]*>",
                              re.IGNORECASE)
# Segment's loader snippet (Aim's telemetry, off by default): nothing to load from here.
ANALYTICS_SNIPPET_RE = re.compile(r"<script>(?:(?!</script>).)*?cdn\.segment\.com.*?</script>",
                                  re.IGNORECASE | re.DOTALL)
CHARSET_RE = re.compile(r"<meta\s+charset=[^>]*>", re.IGNORECASE)

SHIM = """<script>(function () {
  var here = window.location.origin;
  var realFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : (input && input.url) || String(input);
    var origin = here;
    try { origin = new URL(url, window.location.href).origin; } catch (e) {}
    if (origin !== here) {
      return Promise.resolve(new Response("[]", {status: 200,
        headers: {"Content-Type": "application/json"}}));
    }
    return realFetch(input, init);
  };
  window.analytics = false;
  window.loadPyodide = function () { return new Promise(function () {}); };
  try { window.localStorage.setItem("communityPopupSeen", "true"); } catch (e) {}
})();</script>"""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'self'")


def offline_page(html: str) -> str:
    """Aim's index without external scripts and styles, with the offline shim first."""
    html = ANALYTICS_SNIPPET_RE.sub("", html)
    html = EXTERNAL_SCRIPT_RE.sub("", html)
    html = EXTERNAL_LINK_RE.sub("", html)
    charset = CHARSET_RE.search(html)
    if charset is not None:
        return html[:charset.end()] + SHIM + html[charset.end():]
    return html.replace("<head>", "<head>" + SHIM, 1)

"""The results dashboard of an EvalSuite: a JSON API, an HTML page with server-side SVG plots,
health, readiness and metrics, over the per-sample store (read-only) and the response cache.

`eval-runner dashboard` runs it (aiohttp.web, the HTTP library the runner already has).
"""

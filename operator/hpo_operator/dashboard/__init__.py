"""`kubectl hpo dashboard`: a web dashboard of experiments and trials, live.

A small starlette server (server.py) over an in-memory copy of the Experiments and Trials that it
lists and watches with the viewer's own credentials (cluster.py): its pages and JSON API
(routes.py), their guards (guards.py: Host names, security headers, write checks) and the
experiment page's answers cached per version (cache.py). The tables are built by data.py,
the plots by Optuna's visualization module from a study rebuilt from the Trials (figures.py), and
the pages (static/) render both with plotly.js, served from the plotly package itself.
"""

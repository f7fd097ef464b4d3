"""`kubectl hpo dashboard`: a web dashboard of experiments and trials, live.

A small starlette server (server.py) over an in-memory copy of the Experiments and Trials that it
lists and watches with the viewer's own credentials (cluster.py): its pages and JSON API
(routes.py), their guards (guards.py: Host names, security headers, write checks), who is asking
and what they may read when the chart runs it for many teams (auth.py decides, reviews.py asks
the API server, gate.py applies both to every request) and the experiment page's answers cached
per version (cache.py, its figures in lru.py's bounded cache). The tables are built by data.py,
the plots by Optuna's visualization module (figures.py) from a study rebuilt from the Trials
(study.py), and the pages (static/) render both with plotly.js, served from the plotly package
itself.
"""

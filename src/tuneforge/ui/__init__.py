"""`tuneforge ui`: a web UI over the stages — data, training with live curves, eval reports, the registry, a
chat playground, the review queue and live server metrics. Pages call the stages' public functions; long work
runs in worker processes (`ui.jobs`). FastAPI + Jinja2 + plain JavaScript, every asset shipped in the package."""

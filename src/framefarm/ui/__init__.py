"""`framefarm ui`: a web view of the runs in a job log and their storage — runs, chunks, frames,
the video and the trace — with cancel, resume and delete.

Its modules, each one thing:

- `_cmd`: the command — flags to URLs, the socket, the token, uvicorn.
- `app`: the Starlette app: pages, the JSON API under /api/, the token and same-origin checks.
- `_views`: what the pages show, as JSON-safe dicts read from the job log and storage.
- `_media`: the video (HTTP Range) and the preview thumbnail (first frame of a segment).
- `_actions`: cancel, resume and delete, through the code `framefarm cancel` / `resume` run.
- `static/`: plain HTML, CSS and JavaScript; no build step, nothing from the network.

Only the CLI imports this package (an import-linter contract), and nothing here imports
Starlette or uvicorn until the command runs, so a missing `ui` extra is one line.
"""

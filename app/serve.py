"""`make run`: the Streamlit server, warmed up from the moment it starts.

Streamlit runs a page's script only when a browser connects, so a warm-up started from the app
(the job registry's) began when the user opened the page: a Start pressed within the first ~6 s
(imports of torch, transformers and peft; the MLflow store; the demo data) waited for it (measured in
the real-browser test: first live metric 15.2 s with the warm-up in a thread at server start, 6.2 s with
the demo cache built by `make run` first). This launcher runs that warm-up in the server's own process
before the server listens (~6 s), then hands over to Streamlit's CLI: by the time the page can be
opened, the trainer is imported and the demo data loaded, so Start trains at once.

    python -m app.serve [streamlit run options, e.g. --server.port 8501]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

MAIN = Path(__file__).resolve().parent / "main.py"


def _import_warm_up() -> Callable[[], None]:
    """app.state.warm_up, imported without Streamlit's "No runtime found, using MemoryCacheStorageManager": each
    st.cache_data of the pages' modules says it when imported before the server exists (7 lines at every start),
    and memory is the storage they use anyway."""
    import logging

    import streamlit.runtime.caching.cache_data_api as cache_api   # its logger takes Streamlit's level on import

    quiet = logging.getLogger(cache_api.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from app.state import warm_up
    finally:
        quiet.setLevel(level)
    return warm_up


def main(argv: list[str] | None = None) -> None:
    import time

    warm_up = _import_warm_up()
    t0 = time.perf_counter()
    print("em3: importing the trainer and loading the demo data before the server starts ...", flush=True)
    warm_up()
    print(f"em3: ready in {time.perf_counter() - t0:.1f} s", flush=True)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(MAIN), *(sys.argv[1:] if argv is None else argv)]
    cli.main()                                      # Streamlit's own entry point; exits when the server stops


if __name__ == "__main__":
    main()

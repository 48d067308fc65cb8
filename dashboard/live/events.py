"""The event contract of the `container.<id>` groups, defined once.

    {"type": "container.sample", "id": ..., "point": {...metrics.point..., "seq": n},
     "figures": {raw figure: value},               # every figure of runtime/cgroups/figures.py,
                                                   # when one changed
     "sources": {point key: kernel file},          # sources: only when they changed
     "figure_sources": {raw figure: kernel file}}  # likewise
    {"type": "container.procs", "id": ..., "tree": [{pid, ns_pid, ..., children}]}
                                                   # when the tree changed
    {"type": "container.gone", "id": ..., "error": "..."}     # no cgroup to sample
    {"type": "container.history", "id": ..., "points": [...], "sources": {...},
     "tree": [...] | None, "figures": {...}, "figure_sources": {...}}   # to one socket, on connect

The sampler publishes; consumers only forward.
"""
SAMPLE = "container.sample"
PROCS = "container.procs"
GONE = "container.gone"
HISTORY = "container.history"


def group(container_id: str) -> str:
    return f"container.{container_id}"


def sample_event(container_id: str, point: dict, sources: dict | None, figures: dict | None = None,
                 figure_sources: dict | None = None) -> dict:
    ev = {"type": SAMPLE, "id": container_id, "point": point}
    if figures is not None:
        ev["figures"] = figures
    if sources is not None:
        ev["sources"] = sources
    if figure_sources is not None:
        ev["figure_sources"] = figure_sources
    return ev


def procs_event(container_id: str, tree: list) -> dict:
    return {"type": PROCS, "id": container_id, "tree": tree}


def gone_event(container_id: str, error: str) -> dict:
    return {"type": GONE, "id": container_id, "error": error}


def history_event(container_id: str, points: list, sources: dict, tree: list | None,
                  figures: dict | None = None, figure_sources: dict | None = None) -> dict:
    return {"type": HISTORY, "id": container_id, "points": points, "sources": sources, "tree": tree,
            "figures": figures or {}, "figure_sources": figure_sources or {}}

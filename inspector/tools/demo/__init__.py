"""The demo line: simulated cameras, embedded broker, live view (``inspector demo``).

``simulator`` (cameras publishing to Kafka, also ``inspector simulate``), ``cameras`` (the
demo's regular and high-resolution cameras, each at its own rate), ``view`` (the live terminal
view) and ``runner`` (wires the demo) are imported directly, so the simulator does not pull in
the daemon.
"""

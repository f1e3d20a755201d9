"""The control plane: everything behind the daemon's HTTP port.

:mod:`.server` runs uvicorn; :mod:`.api` holds the control routes (sources, cameras, models)
with :mod:`.requests` as their bodies and :mod:`.api_errors` as the one table from errors to
statuses; :mod:`.line` applies changes to the running line between batches; :mod:`.state` and
:mod:`.restore` keep them across restarts. The results and labels API (:mod:`.api_results`,
:mod:`.results_http`, :mod:`.results_models`, :mod:`.results_errors`, :mod:`.labels`,
:mod:`.results_wiring`) and the operator console (:mod:`.console`) read retained frames.

The data path (sources, batcher, worker, postprocess, sinks, pipeline) never imports this wing;
the daemon wires it.
"""

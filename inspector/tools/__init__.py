"""Tools around the daemon: demo line, simulator, synthetic data, benchmarks, embedded broker.

None of them is imported by the daemon; they need the extras (``pip install 'inspector[demo]'``...).
"""

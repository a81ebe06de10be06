"""The CPU benchmark: latency, throughput and memory of every variant, each measured in a fresh
process.

probe.py    the child process (numpy-only imports at top level): load, warm up, time, read RSS
session.py  the parent side: start probes, time them in turns round by round, read results
run.py      `unetq bench`: jobs per model, part files, the merge into the average CSV
throughput.py  images per second over streams, per batch size or OpenVINO's async requests
machine.py  the machine the numbers hold for

Nothing is imported here, so the probe child (`python -m unetq.bench.probe`) stays light.
"""

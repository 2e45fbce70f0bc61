"""The poller worker process: registry -> artifact -> cache -> verify -> unpack -> ask the master.

`python -m dewy.poller --fd N` (started by dewy-master); see worker.py for the loop and deploy.py
for one deploy.
"""
